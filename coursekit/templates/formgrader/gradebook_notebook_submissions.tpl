{#- nbgrader's page, with its button's inline onclick handler bound by coursekit/static/formgrader.js. -#}
{%- extends 'nbgrader/gradebook_notebook_submissions.tpl' -%}

{%- block messages -%}
<button id="toggle_names">Show All Names</button>
{%- endblock -%}
