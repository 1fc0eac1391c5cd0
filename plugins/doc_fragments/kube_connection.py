# Connection options shared by every module of this toolkit (one source: plugins/module_utils/kube_task.py CONNECTION_SPEC).


class ModuleDocFragment:
    DOCUMENTATION = r"""
options:
  kubeconfig:
    description:
      - Path to a kubeconfig file.
      - Defaults to E(KUBECONFIG), then C(~/.kube/config); inside a pod, the service account is used.
    type: path
  context:
    description: The kubeconfig context to use (default, the current context).
    type: str
  host:
    description: The API server URL, overriding the kubeconfig's.
    type: str
  api_key:
    description: A bearer token, overriding the kubeconfig's credentials.
    type: str
  validate_certs:
    description: Whether to verify the API server's TLS certificate.
    type: bool
    aliases: [verify_ssl]
  ca_cert:
    description: Path to the CA certificate that signed the API server's certificate.
    type: path
    aliases: [ssl_ca_cert]
requirements:
  - python >= 3.11
  - kubernetes >= 32, < 38 (the Kubernetes Python client; tested with 32.0.1, 37.0.2 and 37.0.3)
  - the C(nvidia-mig-rollout) Python package (C(pip install -r) of the collection's C(requirements.txt))
notes:
  - Runs on the control host (a local connection); there the toolkit's action plugin runs it in-process,
    which saves starting Python and loading the Kubernetes client for every task.
  - Needs the C(nvidia-mig-rollout) Python package in the interpreter (the collection's C(requirements.txt) installs it
    from the wheel the collection carries; a checkout, C(pip install -e .)).
  - A Kubernetes API error fails the task with one sentence naming the object, the HTTP status and the reason.
"""
