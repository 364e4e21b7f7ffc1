// What nbgrader's formgrader pages did in inline scripts and event handlers, as a file: the
// course's Jupyter server sends a Content-Security-Policy that runs no inline script at all
// (coursekit/formgrader.py). Loaded after jQuery and Bootstrap, before nbgrader's page scripts.

// 1. The page's values, from its JSON data island, as the globals nbgrader's scripts read
//    (base_url, submission_id, assignment_id, notebook_id, student_id, url_prefix, default_timezone).
(function () {
  var island = document.getElementById("coursekit-page-data");
  var data = island ? JSON.parse(island.textContent) : {};
  ["base_url", "submission_id", "assignment_id", "notebook_id", "student_id", "url_prefix", "default_timezone"]
    .forEach(function (name) {
      if (data[name] !== undefined && data[name] !== null) {
        window[name] = data[name];
      }
    });
})();

// 2. The submission view: show or hide the student's name (nbgrader's toggle_name).
function toggle_name(on) {
  $(".name-shown").tooltip("hide");
  $(".name-hidden").tooltip("hide");
  if (on) {
    $(".name-shown").show();
    $(".name-hidden").hide();
  } else {
    $(".name-hidden").show();
    $(".name-shown").hide();
  }
}

$(document).ready(function () {
  // The submission view: links to the live notebook (linkTo is nbgrader's, utils.js), the
  // eye icons, their tooltips.
  $("[data-link]").each(function () {
    $(this).map(linkTo("notebook", $(this).data("link"))).removeAttr("data-link");
  });
  $("span.glyphicon.name-hidden")
    .tooltip({title: "Show student name", placement: "bottom", trigger: "hover"})
    .on("click", function () { toggle_name(true); });
  $("span.glyphicon.name-shown")
    .tooltip({title: "Hide student name", placement: "bottom", trigger: "hover"})
    .on("click", function () { toggle_name(false); });

  // Manual Grading, a notebook's submissions: the "Show All Names" button (nbgrader's
  // toggleAllNames, gradebook_notebook_submissions.js).
  $("#toggle_names").on("click", function () { toggleAllNames(); });
});
