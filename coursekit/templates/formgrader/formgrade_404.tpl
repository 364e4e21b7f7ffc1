{#- A submission whose autograded notebook is missing (nbgrader's own page imports a file that
    nbgrader 0.9.6 does not ship). -#}
<!DOCTYPE html>
<html>
<head>
<meta charset="utf-8" />
<title>{{ resources.notebook_id }}: submission not found</title>
<link rel="stylesheet" href="{{ resources.base_url }}/formgrader/static/node_modules/bootstrap/dist/css/bootstrap.min.css" />
</head>
<body>
  <div class="container">
    <ol class="breadcrumb">
      <li><a href="{{ resources.base_url }}/formgrader/gradebook">Manual Grading</a></li>
      <li><a href="{{ resources.base_url }}/formgrader/gradebook/{{ resources.assignment_id | urlencode }}">{{ resources.assignment_id }}</a></li>
      <li><a href="{{ resources.base_url }}/formgrader/gradebook/{{ resources.assignment_id | urlencode }}/{{ resources.notebook_id | urlencode }}">{{ resources.notebook_id }}</a></li>
    </ol>
    <div class="alert alert-danger">Submission {{ resources.index + 1 }} / {{ resources.total }}: the autograded
      notebook is missing: {{ resources.filename }}</div>
  </div>
</body>
</html>
