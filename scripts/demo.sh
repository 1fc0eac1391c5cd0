#!/usr/bin/env bash
# The main job on the local simulated cluster: start it (without the GPU Operator), install the operator
# with playbooks/nvidia-gpu-operator.yml, start some GPU workloads, print the rollout plan, run the rolling
# MIG reconfiguration as the least-privileged identity, and show the report and the workloads.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV="${VENV:-.venv}"   # make's virtualenv for its PYTHON (make demo PYTHON=python3.13: .venv-python3.13)
export PATH="$PWD/$VENV/bin:$("$VENV/bin/simcluster" bin-dir):$PATH"
export SIMCLUSTER_DIR="${SIMCLUSTER_DIR:-$HOME/.local/state/simcluster/demo}"
started=$(date +%s)
# ansible-core deprecates strategy plugins from outside ansible.builtin: every run that loads the rollout's window
# (nvidia_mig.rollout.mig_window) says so (README.md "Warnings"; docs/design.md: what happens when it stops
# loading them). The demo drops exactly that message and the hint ansible-core prints before it; every other
# warning passes.
without_strategy_deprecation() {
  awk '/\[WARNING\]: Deprecation warnings can be disabled by setting/ { if (held != "") print held; held = $0; next }
       /\[DEPRECATION WARNING\]: Use of strategy plugins not included in ansible\.builtin/ { held = ""; next }
       { if (held != "") { print held; held = "" } print; fflush() }
       END { if (held != "") print held }'
}
step() { printf '\n\033[1m== %s (%ss)\033[0m\n' "$1" "$(( $(date +%s) - started ))"; }

step "Start the simulated GPU cluster (real Kubernetes v1.34.4 control plane, simulated kubelets and NVIDIA stack)"
simcluster up --port 0 --without-operator
eval "$(simcluster env)"
ADMIN="$KUBECONFIG"
kubectl get nodes -L gpu-pool,nvidia.com/gpu.product

step "Install NVIDIA's GPU Operator (no internet here: its chart from the pinned module; on a real cluster, NVIDIA's repository)"
ansible-playbook playbooks/nvidia-gpu-operator.yml -e gpu_operator_chart_path="$(simcluster path chart)"

step "Least-privilege roles for the rollout, its exact fence (an admission policy), and some GPU workloads"
kubectl apply -f rbac/mig-rollout.yaml -f rbac/bind-example.yaml -f rbac/mig-rollout-fence.yaml -f demo/workloads.yaml
kubectl wait --for=condition=Available deployment/train deployment/notebook deployment/web -n demo --timeout=120s
kubectl get pods -n demo -o wide

export KUBECONFIG="$SIMCLUSTER_OPERATOR_KUBECONFIG"   # the rollout runs as the non-admin identity
INVENTORY=(-i config/hosts.yml -i config/gpu_nodes.yml -i demo/inventory)

step "The plan (check mode): what changes, what is skipped, which pods would be evicted"
ansible-playbook "${INVENTORY[@]}" playbooks/mig-reconfigure.yml --check 2> >(without_strategy_deprecation >&2)

step "The rolling MIG reconfiguration, at most two nodes at a time (a node starts as soon as another finishes)"
ansible-playbook "${INVENTORY[@]}" playbooks/mig-reconfigure.yml -e mig_rollout_max_unavailable=2 \
  2> >(without_strategy_deprecation >&2)

step "After: nodes, their MIG resources, and the workloads (the inference pods now have their MIG slices)"
export KUBECONFIG="$ADMIN"
kubectl get nodes -L nvidia.com/mig.config,nvidia.com/mig.config.state
kubectl get pods -n demo -o wide
step "Done: the report is in reports/latest.json. The cluster keeps running: 'export SIMCLUSTER_DIR=$SIMCLUSTER_DIR; eval \"\$($VENV/bin/simcluster env)\"' to use it, '$VENV/bin/simcluster down' to stop it"
# The run's timeline (a self-contained page: any browser opens it, none is needed to produce it).
echo "The rollout's timeline: file://$(realpath reports/latest.html)"
