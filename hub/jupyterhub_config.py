"""JupyterHub configuration of the course hub; `bin/hub` (coursekit/hosting/hub.py) starts JupyterHub with it.

The machine-specific values (ports, folders, who is staff) come from the JSON file named by
$COURSEKIT_HUB_SETTINGS, which coursekit/hosting/hub.py writes into the hub's private state folder.

- Everything listens on 127.0.0.1: the proxy (the address people open), the hub, the proxy's
  API and every user's server.
- Log-in with the Unix password (PAM); only the accounts of the course may log in; nobody is a
  JupyterHub admin (an admin could reach other users' servers).
- Each user's Jupyter server runs as that Unix user (LocalProcessSpawner), from the hub's own
  environment (Python from /usr/bin, the course's pinned Jupyter, nbgrader and TensorFlow, and
  the students' coursekit wheel), never from the repository's .venv.
- Students start in their home folder with nbgrader's Assignments tab; formgrader and the
  course list are switched off for them (cosmetic: their Unix account is what keeps them out
  of the course folder, see coursekit/hosting/hub.py).
- The instructor and the TAs start in the course folder, with Formgrader, and the repository
  on PYTHONPATH (the course's nbgrader_config.py imports coursekit's grading modules).
"""

import json
import os

from jupyterhub.spawner import LocalProcessSpawner, set_user_setuid

c = get_config()  # noqa: F821 (provided by JupyterHub when it loads this file)
settings = json.loads(open(os.environ["COURSEKIT_HUB_SETTINGS"]).read())
state = settings["state"]

c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = settings["port"]
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = settings["hub_port"]
c.ConfigurableHTTPProxy.api_url = f"http://127.0.0.1:{settings['proxy_api_port']}"
c.ConfigurableHTTPProxy.command = [settings["proxy"]]
c.ConfigurableHTTPProxy.pid_file = os.path.join(state, "proxy.pid")
c.JupyterHub.pid_file = os.path.join(state, "jupyterhub.pid")
c.JupyterHub.db_url = "sqlite:///" + os.path.join(state, "jupyterhub.sqlite")
c.JupyterHub.cookie_secret_file = os.path.join(state, "jupyterhub_cookie_secret")
c.JupyterHub.cleanup_servers = True  # stopping the hub stops every user's server
c.JupyterHub.services = settings.get("services", [])  # grading on submit, if on (coursekit/hosting/hub.py, Hub.services)

c.JupyterHub.authenticator_class = "pam"
c.PAMAuthenticator.open_sessions = False  # no login sessions (systemd-logind) on a course server
c.Authenticator.allowed_users = set(settings["roles"])
c.Authenticator.admin_users = set()


class CourseSpawner(LocalProcessSpawner):
    """A user's server as that user, configured for their role ("student" or "staff")."""

    @property
    def role(self) -> str:
        return settings["roles"][self.user.name]

    def get_env(self):
        env = super().get_env()
        env.update({
            "PATH": f"{settings['env']}/bin:/usr/local/bin:/usr/bin:/bin",
            "JUPYTER_CONFIG_PATH": settings["role_config"][self.role],
            "COURSEKIT_EXCHANGE": settings["exchange"],
            "COURSEKIT_COURSE_ID": settings["course_id"],
            "TF_CPP_MIN_LOG_LEVEL": "3",
            "PYTHONNOUSERSITE": "1",
        })
        if settings.get("data_dir"):
            env["COURSEKIT_DATA_DIR"] = settings["data_dir"]
        if self.role == "staff":
            env["PYTHONPATH"] = settings["repo"]
        return env

    def make_preexec_fn(self, name):
        if self.role != "staff":
            return super().make_preexec_fn(name)
        setuid = set_user_setuid(name)
        course = settings["course"]

        def preexec():
            setuid()
            os.chdir(course)  # formgrader and nbgrader read the course's nbgrader_config.py from here
        return preexec


c.JupyterHub.spawner_class = CourseSpawner
c.Spawner.cmd = [os.path.join(settings["env"], "bin", "jupyterhub-singleuser")]
c.Spawner.env_keep = ["LANG", "LC_ALL", "TZ"]  # nothing of root's environment (PATH, PYTHONPATH...)
c.Spawner.default_url = "/lab"
c.Spawner.notebook_dir = ""  # students: their home folder


def notebook_dir(spawner):
    spawner.notebook_dir = settings["course"] if spawner.role == "staff" else spawner.notebook_dir


c.Spawner.pre_spawn_hook = notebook_dir
c.Spawner.start_timeout = 120
c.Spawner.http_timeout = 120
