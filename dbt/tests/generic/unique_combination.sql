{#- Rows whose combination of `columns` is not unique: a composite key, checked without
    dbt_utils so the project needs no package download (dbt deps goes to hub.getdbt.com). -#}
{% test unique_combination(model, columns) %}
select {{ columns | join(', ') }}, count(*) as occurrences
from {{ model }}
group by {{ columns | join(', ') }}
having count(*) > 1
{% endtest %}
