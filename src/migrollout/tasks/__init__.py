"""One module per Ansible module: argument spec and ``run`` over plain data (see ``ansible_glue``)."""
