"""A real browser for the tests: Debian's headless Chromium driven by its WebDriver (chromedriver).

    with Browser.start(screenshots=SHOTS) as browser:
        browser.open("http://127.0.0.1:8000/hub/login")
        browser.type_into("#username_input", "alice")
        browser.shot("01-login")             # -> SHOTS/01-login.png, kept after the test run

Chromium runs as root here, so with --no-sandbox, and with the flags that keep it off the
network it cannot reach (no background networking, component updates, sync or first-run
pages), in a fresh profile that is deleted when the browser stops. Selenium is given the paths
of /usr/bin/chromedriver and /usr/bin/chromium, so it never looks for a driver to download.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Callable

from selenium import webdriver
from selenium.common.exceptions import StaleElementReferenceException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-dev-shm-usage")


def available() -> bool:
    return Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()


class Browser:
    def __init__(self, driver: webdriver.Chrome, profile: str, screenshots: Path | None):
        self.driver = driver
        self._profile = profile
        self.screenshots = screenshots

    @classmethod
    def start(cls, screenshots: Path | None = None, width: int = 1400, height: int = 900) -> "Browser":
        profile = tempfile.mkdtemp(prefix="chromium-profile-")
        options = webdriver.ChromeOptions()
        options.binary_location = CHROMIUM
        for flag in FLAGS:
            options.add_argument(flag)
        options.add_argument(f"--user-data-dir={profile}")
        options.add_argument(f"--window-size={width},{height}")
        try:
            driver = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
        except WebDriverException:
            shutil.rmtree(profile, ignore_errors=True)
            raise
        driver.set_page_load_timeout(60)
        if screenshots is not None:
            screenshots.mkdir(parents=True, exist_ok=True)
        return cls(driver, profile, screenshots)

    def __enter__(self) -> "Browser":
        return self

    def __exit__(self, *exc) -> None:
        self.quit()

    def quit(self) -> None:
        try:
            self.driver.quit()
        finally:
            shutil.rmtree(self._profile, ignore_errors=True)

    # --- pages ----------------------------------------------------------------------------------

    def open(self, url: str) -> None:
        self.driver.get(url)

    @property
    def url(self) -> str:
        return self.driver.current_url

    def text(self) -> str:
        """What the page shows as text (what a person reads), frames not included."""
        return self.driver.find_element(By.TAG_NAME, "body").text

    def shot(self, name: str) -> Path | None:
        """Save a screenshot as <screenshots>/<name>.png."""
        if self.screenshots is None:
            return None
        path = self.screenshots / f"{name}.png"
        self.driver.save_screenshot(str(path))
        return path

    def script(self, source: str, *args):
        return self.driver.execute_script(source, *args)

    def async_script(self, source: str, *args, timeout: float = 60):
        """Run ``source`` with ``arguments[arguments.length - 1]`` as its callback; return what it passes."""
        self.driver.set_script_timeout(timeout)
        return self.driver.execute_async_script(source, *args)

    def fetch_json(self, method: str, url: str, body=None, headers: dict | None = None, timeout: float = 60):
        """An HTTP request from the page, with the page's cookies (the logged-in user's session)."""
        result = self.async_script(
            """const [method, url, body, headers, done] = arguments;
            fetch(url, {method, headers: Object.assign({'Content-Type': 'application/json'}, headers || {}),
                        body: body === null ? undefined : JSON.stringify(body), credentials: 'same-origin'})
              .then(async r => done({status: r.status, text: await r.text()}))
              .catch(e => done({status: 0, text: String(e)}));""",
            method, url, body, headers, timeout=timeout)
        return result

    # --- waiting --------------------------------------------------------------------------------

    def wait_for(self, condition: Callable[[], object], timeout: float = 60, what: str = "condition",
                 interval: float = 0.25):
        """Poll ``condition`` until it returns something truthy; return that."""
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            try:
                value = condition()
                if value:
                    return value
            except (WebDriverException, StaleElementReferenceException) as err:
                last_error = err
            time.sleep(interval)
        self.shot(f"timeout-{what.replace(' ', '-')[:40]}")
        raise TimeoutError(f"waited {timeout:.0f} s for {what} at {self.url}" + (f" (last error: {last_error})" if last_error else ""))

    def find(self, css: str, timeout: float = 60, visible: bool = True) -> WebElement:
        def found():
            for element in self.driver.find_elements(By.CSS_SELECTOR, css):
                if not visible or element.is_displayed():
                    return element
            return None
        return self.wait_for(found, timeout, f"element {css}")

    def find_text(self, css: str, text: str, timeout: float = 60) -> WebElement:
        """The first visible element matching ``css`` whose text contains ``text``."""
        def found():
            for element in self.driver.find_elements(By.CSS_SELECTOR, css):
                if element.is_displayed() and text in element.text:
                    return element
            return None
        return self.wait_for(found, timeout, f"{css} with text {text!r}")

    def find_innermost(self, text: str, timeout: float = 60) -> WebElement:
        """The visible element whose own text (not a descendant's) contains ``text``."""
        literal = "concat('" + "', \"'\", '".join(text.split("'")) + "', '')"
        def found():
            for element in self.driver.find_elements(By.XPATH, f"//*[text()[contains(., {literal})]]"):
                if element.is_displayed():
                    return element
            return None
        return self.wait_for(found, timeout, f"text {text!r}")

    def scroll_to(self, element: WebElement, block: str = "center") -> None:
        self.script("arguments[0].scrollIntoView({block: arguments[1]})", element, block)
        time.sleep(0.5)  # let the page settle before a screenshot

    def wait_for_text(self, text: str, timeout: float = 60) -> None:
        self.wait_for(lambda: text in self.text(), timeout, f"text {text!r}")

    def click(self, css: str, timeout: float = 60) -> None:
        self.find(css, timeout).click()

    def type_into(self, css: str, text: str, timeout: float = 60) -> None:
        element = self.find(css, timeout)
        element.clear()
        element.send_keys(text)

    def switch_to_frame(self, css: str, timeout: float = 60) -> None:
        self.driver.switch_to.frame(self.find(css, timeout))

    def switch_to_page(self) -> None:
        self.driver.switch_to.default_content()
