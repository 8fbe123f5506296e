#!/usr/bin/env bash
# churnflow end to end on a real cluster: train and deploy through Kubeflow Pipelines, score through
# KServe over v1 and v2, check the served model version, then a canary that passes and one that fails
# and is rolled back. With --dry-run nothing is contacted: every step is printed, and what can be
# checked offline is (the pipeline compiled, manifests built and validated, InferenceServices rendered).
set -euo pipefail

usage() {
  cat <<'EOF'
Usage: scripts/cluster-e2e.sh [--dry-run] [--workdir DIR] [--namespace NS] [--mode Serverless|RawDeployment]
                              [--kfp-host URL] [--train-image IMAGE] [--serve-image IMAGE]

The cluster it expects (the versions this script is written for; install them in this order):
  kind v0.24+ (Kubernetes 1.30/1.31) or minikube v1.34+, 4 CPUs and 8 GiB for the cluster:
      kind create cluster --name churnflow
  KServe 0.15 with its quick install (cert-manager, Istio, Knative Serving for Serverless):
      curl -fsSL https://raw.githubusercontent.com/kserve/kserve/release-0.15/hack/quick_install.sh | bash
      RawDeployment only (no Knative, no Istio): ... quick_install.sh | bash -s -- -r
      (--mode must match: a Serverless InferenceService needs Knative)
  Kubeflow Pipelines standalone (namespace kubeflow, with its MinIO at minio-service.kubeflow:9000):
      export PIPELINE_VERSION=2.14.3   # the pipeline's fan-in (dsl.Collected) needs a 2.14+ backend
      kubectl apply -k "github.com/kubeflow/pipelines/manifests/kustomize/cluster-scoped-resources?ref=$PIPELINE_VERSION"
      kubectl wait --for condition=established --timeout=60s crd/applications.app.k8s.io
      kubectl apply -k "github.com/kubeflow/pipelines/manifests/kustomize/env/platform-agnostic?ref=$PIPELINE_VERSION"
      kubectl port-forward -n kubeflow svc/ml-pipeline-ui 8888:80 &     # the KFP API for --kfp-host
  The two images built and loaded into the cluster (see docs/deploy.md):
      kind load docker-image REGISTRY/churnflow-train:TAG REGISTRY/churnflow-serve:TAG --name churnflow
  On the machine running this script: kubectl (context: that cluster), curl, python3, and churnflow
  installed (pip install . or the project's .venv; or set CHURNFLOW=/path/to/churnflow).

Options (environment variables of the same name in capitals work too):
  --dry-run            print every step, contact nothing; compile, build, render and validate offline
  --workdir DIR        where rendered files and logs go (default: a new temporary directory)
  --namespace NS       namespace the model is served in (default kubeflow-user-example-com)
  --mode MODE          KServe deployment mode, Serverless (default) or RawDeployment (no canary there:
                       KServe ignores canaryTrafficPercent, so only the failing rollout is run)
  --kfp-host URL       Kubeflow Pipelines API (default http://localhost:8888)
  --train-image IMAGE  the train image every pipeline step runs (default ghcr.io/churnflow/churnflow-train:0.1.0)
  --serve-image IMAGE  the predictor image (default ghcr.io/churnflow/churnflow-serve:0.1.0)
  INGRESS              Serverless ingress service as NAMESPACE/SERVICE (default istio-system/istio-ingressgateway)
EOF
}

DRY_RUN=${DRY_RUN:-0}
WORKDIR=${WORKDIR:-}
NAMESPACE=${NAMESPACE:-kubeflow-user-example-com}
MODE=${MODE:-Serverless}
KFP_HOST=${KFP_HOST:-http://localhost:8888}
TRAIN_IMAGE=${TRAIN_IMAGE:-ghcr.io/churnflow/churnflow-train:0.1.0}
SERVE_IMAGE=${SERVE_IMAGE:-ghcr.io/churnflow/churnflow-serve:0.1.0}
INGRESS=${INGRESS:-istio-system/istio-ingressgateway}
CHURNFLOW=${CHURNFLOW:-churnflow}
PYTHON=${PYTHON:-python3}
MODEL_NAME=churn
LOCAL_PORT=${LOCAL_PORT:-18080}
RUN_TIMEOUT=${RUN_TIMEOUT:-3600}
MISSING_MODEL_URI="s3://mlpipeline/churnflow-e2e/no-such-model"

while (($#)); do
  case "$1" in
    --dry-run) DRY_RUN=1 ;;
    --workdir) WORKDIR=${2:?--workdir needs a directory}; shift ;;
    --namespace) NAMESPACE=${2:?--namespace needs a name}; shift ;;
    --mode) MODE=${2:?--mode needs Serverless or RawDeployment}; shift ;;
    --kfp-host) KFP_HOST=${2:?--kfp-host needs a URL}; shift ;;
    --train-image) TRAIN_IMAGE=${2:?--train-image needs an image}; shift ;;
    --serve-image) SERVE_IMAGE=${2:?--serve-image needs an image}; shift ;;
    -h | --help) usage; exit 0 ;;
    *) echo "cluster-e2e: error: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
case "$MODE" in
  Serverless | RawDeployment) ;;
  *) echo "cluster-e2e: error: --mode: expected Serverless or RawDeployment, got '$MODE'" >&2; exit 2 ;;
esac

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORKDIR=${WORKDIR:-$(mktemp -d -t churnflow-e2e.XXXXXX)}
mkdir -p "$WORKDIR"
STEP=0
PF_PID=""

step() {
  STEP=$((STEP + 1))
  printf '\n[step %d] %s\n' "$STEP" "$*"
}

# The command line as one could paste it: arguments with spaces or quotes single-quoted.
shown() {
  local out="" arg
  for arg in "$@"; do
    if [[ "$arg" =~ ^[A-Za-z0-9_./:=@%+,{}-]+$ ]]; then
      out+="$arg "
    else
      out+="'${arg//\'/\'\\\'\'}' "
    fi
  done
  printf '+ %s\n' "${out% }" >&2
}

# A command described rather than shown verbatim (a pipe, a secret, a long option list).
say() { printf '+ %s\n' "$*" >&2; }

# A command against the cluster: printed, and run unless --dry-run.
run() {
  shown "$@"
  if ((DRY_RUN)); then return 0; fi
  "$@"
}

# A command that touches nothing outside WORKDIR: run in both modes.
offline() {
  shown "$@"
  "$@"
}

fail() {
  echo "cluster-e2e: FAILED at step $STEP: $*" >&2
  exit 1
}

ok() { echo "  ok: $*"; }

json_field() { # json_field FILE PYTHON-EXPRESSION-ON-d
  "$PYTHON" -c 'import json, sys; d = json.load(open(sys.argv[1])); print(eval(sys.argv[2]))' "$1" "$2"
}

cleanup() {
  if [[ -n "$PF_PID" ]]; then kill "$PF_PID" 2>/dev/null || true; fi
}
trap cleanup EXIT

isvc_field() { # isvc_field JSONPATH
  kubectl get inferenceservice "$MODEL_NAME" -n "$NAMESPACE" -o "jsonpath=$1"
}

start_port_forward() {
  local target host
  if [[ "$MODE" == Serverless ]]; then
    target=(-n "${INGRESS%%/*}" "svc/${INGRESS#*/}" "$LOCAL_PORT:80")
  else
    target=(-n "$NAMESPACE" "svc/$MODEL_NAME-predictor" "$LOCAL_PORT:80")
  fi
  say "kubectl port-forward ${target[*]} &"
  if ((DRY_RUN)); then return 0; fi
  kubectl port-forward "${target[@]}" >"$WORKDIR/port-forward.log" 2>&1 &
  PF_PID=$!
  sleep 3
  host=$(isvc_field '{.status.url}')
  HOST_HEADER=${host#*://}
}

# POST a body to the predictor through the cluster's ingress; the answer goes to FILE.
score() { # score PATH BODY-FILE ANSWER-FILE
  run curl -fsS -o "$3" -H "Host: ${HOST_HEADER:-$MODEL_NAME.$NAMESPACE}" -H 'Content-Type: application/json' \
    --data @"$2" "http://localhost:$LOCAL_PORT$1"
}

served_version() { # the model_version the predictor reports in a v2 answer (commands are shown on stderr)
  score "/v2/models/$MODEL_NAME/infer" "$WORKDIR/v2-request.json" "$WORKDIR/v2-answer.json"
  if ((DRY_RUN)); then echo "DRY-RUN-VERSION"; return 0; fi
  json_field "$WORKDIR/v2-answer.json" 'd["model_version"]'
}

echo "cluster-e2e: namespace $NAMESPACE, mode $MODE, KFP $KFP_HOST, workdir $WORKDIR$( ((DRY_RUN)) && echo ', dry run')"

step "preflight: tools, cluster, KServe CRD, KFP API"
for tool in "$PYTHON" "$CHURNFLOW"; do
  command -v "$tool" >/dev/null || fail "$tool is not on PATH"
done
if ((DRY_RUN)); then
  command -v kubectl >/dev/null || echo "  (kubectl not found: the kustomize build is skipped in this dry run)"
else
  command -v kubectl >/dev/null || fail "kubectl is not on PATH"
  command -v curl >/dev/null || fail "curl is not on PATH"
fi
run kubectl cluster-info
run kubectl get crd inferenceservices.serving.kserve.io
run curl -fsS -o /dev/null "$KFP_HOST/apis/v2beta1/healthz"
ok "prerequisites present"

step "render offline: the pipeline, manifests/ for namespace $NAMESPACE, the InferenceServices of the canaries"
offline "$CHURNFLOW" compile --image "$TRAIN_IMAGE" --output "$WORKDIR/churn_pipeline.yaml"
if command -v kubectl >/dev/null; then
  # KFP standalone has no Kubeflow profile: no PodDefault CRD, and no mesh-wide deny that the predictor's
  # AuthorizationPolicy would open; with KServe's Istio that ALLOW policy would instead shut out the
  # predictions this script sends through the ingress. Both are left out here (docs/deploy.md, step 2).
  overlay="$WORKDIR/manifests-standalone"
  mkdir -p "$overlay"
  cat >"$overlay/kustomization.yaml" <<EOF
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - $(realpath --relative-to="$overlay" "$ROOT/manifests")
patches:
  - patch: |-
      \$patch: delete
      apiVersion: security.istio.io/v1
      kind: AuthorizationPolicy
      metadata:
        name: churn-predictor-serving-check
  - patch: |-
      \$patch: delete
      apiVersion: kubeflow.org/v1alpha1
      kind: PodDefault
      metadata:
        name: access-ml-pipeline
EOF
  say "kubectl kustomize $overlay (manifests/ without the profile-only PodDefault and AuthorizationPolicy)" \
    "> $WORKDIR/manifests.yaml"
  kubectl kustomize "$overlay" | sed "s/namespace: kubeflow-user-example-com/namespace: $NAMESPACE/" \
    >"$WORKDIR/manifests.yaml"
  if command -v kubernetes-validate >/dev/null; then
    offline kubernetes-validate --strict "$WORKDIR/manifests.yaml" >"$WORKDIR/validate.log" ||
      fail "manifests/ do not validate: $(cat "$WORKDIR/validate.log")"
    ok "manifests/ built and valid (kubernetes-validate --strict)"
  fi
fi
cat >"$WORKDIR/access.yaml" <<EOF
# The namespace, and (standalone KFP runs pipelines as kubeflow/pipeline-runner) the deploy step's Role
# granted to that account too.
apiVersion: v1
kind: Namespace
metadata:
  name: $NAMESPACE
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: churnflow-deployer-kfp-standalone
  namespace: $NAMESPACE
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: churnflow-deployer
subjects:
  - kind: ServiceAccount
    name: pipeline-runner
    namespace: kubeflow
EOF
for canary in pass fail; do
  uri="s3://mlpipeline/v2/artifacts/DRY-RUN/model"
  [[ "$canary" == fail ]] && uri=$MISSING_MODEL_URI
  offline "$CHURNFLOW" deploy --dry-run --model-uri "$uri" --namespace "$NAMESPACE" --image "$SERVE_IMAGE" --store-secret "" \
    --deployment-mode "$MODE" --run-name "cluster-e2e canary that should $canary" \
    >"$WORKDIR/isvc-canary-$canary.yaml"
done
ok "rendered $(find "$WORKDIR" -maxdepth 1 -name '*.yaml' | wc -l) files into $WORKDIR"
cat >"$WORKDIR/v1-request.json" <<'EOF'
{"instances": [{"tenure": 12, "usage": 50, "age": 30, "monthly_charges": 70, "contract_type": "Month-to-month"}]}
EOF
cat >"$WORKDIR/v2-request.json" <<'EOF'
{"inputs": [
  {"name": "tenure", "shape": [1], "datatype": "INT64", "data": [12]},
  {"name": "usage", "shape": [1], "datatype": "FP64", "data": [50]},
  {"name": "age", "shape": [1], "datatype": "INT64", "data": [30]},
  {"name": "monthly_charges", "shape": [1], "datatype": "FP64", "data": [70]},
  {"name": "contract_type", "shape": [1], "datatype": "BYTES", "data": ["Month-to-month"]}]}
EOF

step "apply: namespace, manifests/ (RBAC, storage account + Secret, NetworkPolicy), standalone KFP's access"
run kubectl apply -f "$WORKDIR/access.yaml"
run kubectl apply -f "$WORKDIR/manifests.yaml"
ok "applied"

step "storage credentials: the predictor's S3 Secret gets the keys of Kubeflow's MinIO"
say "kubectl get secret mlpipeline-minio-artifact -n kubeflow (accesskey, secretkey)" \
  "| kubectl patch secret churnflow-storage-s3 -n $NAMESPACE"
if ! ((DRY_RUN)); then
  access=$(kubectl get secret mlpipeline-minio-artifact -n kubeflow -o 'jsonpath={.data.accesskey}' | base64 -d)
  secret=$(kubectl get secret mlpipeline-minio-artifact -n kubeflow -o 'jsonpath={.data.secretkey}' | base64 -d)
  kubectl patch secret churnflow-storage-s3 -n "$NAMESPACE" --type merge -p \
    "{\"stringData\": {\"AWS_ACCESS_KEY_ID\": \"$access\", \"AWS_SECRET_ACCESS_KEY\": \"$secret\"}}" >/dev/null
fi
ok "churnflow-storage-s3 holds MinIO's keys"

step "data credentials: the preprocess step's Secret (data_secret) with the same keys"
say "kubectl create secret generic churnflow-data -n $NAMESPACE (MinIO's keys and endpoint) | kubectl apply"
if ! ((DRY_RUN)); then
  kubectl create secret generic churnflow-data -n "$NAMESPACE" --dry-run=client -o yaml \
    --from-literal=AWS_ACCESS_KEY_ID="$access" --from-literal=AWS_SECRET_ACCESS_KEY="$secret" \
    --from-literal=AWS_ENDPOINT_URL=http://minio-service.kubeflow:9000 | kubectl apply -f - >/dev/null
fi
ok "churnflow-data holds MinIO's keys (no prediction store here: store_secret is empty)"

step "submit: upload and run the training pipeline (deploy_action=apply, deployment_mode=$MODE)"
run "$CHURNFLOW" upload --host "$KFP_HOST" --image "$TRAIN_IMAGE" --name "churnflow-e2e-$(date -u +%Y%m%d%H%M%S)"
RUN_ID=DRY-RUN
say "$CHURNFLOW submit --host $KFP_HOST --image $TRAIN_IMAGE ... --set deploy_action=apply --set deployment_mode=$MODE"
if ! ((DRY_RUN)); then
  "$CHURNFLOW" submit --host "$KFP_HOST" --image "$TRAIN_IMAGE" --experiment churnflow-e2e \
    --run-name "cluster-e2e $(date -u +%Y-%m-%dT%H:%M:%SZ)" --set namespace="$NAMESPACE" \
    --set serve_image="$SERVE_IMAGE" --set deploy_action=apply --set deployment_mode="$MODE" \
    --set store_secret= --set min_roc_auc=0.6 | tee "$WORKDIR/submit.log"
  RUN_ID=$(awk '/started run/ {print $4}' "$WORKDIR/submit.log")
  [[ -n "$RUN_ID" ]] || fail "no run id in the submit output"
fi
ok "run $RUN_ID started"

step "wait: the run succeeds (at most $RUN_TIMEOUT s) and the InferenceService is Ready"
say "kfp.Client($KFP_HOST).wait_for_run_completion($RUN_ID)"
if ! ((DRY_RUN)); then
  state=$("$PYTHON" -c 'import sys, kfp
run = kfp.Client(host=sys.argv[1]).wait_for_run_completion(sys.argv[2], timeout=int(sys.argv[3]))
print(run.state)' "$KFP_HOST" "$RUN_ID" "$RUN_TIMEOUT")
  [[ "$state" == SUCCEEDED ]] || fail "the run ended $state (see the KFP UI, run $RUN_ID)"
fi
run kubectl wait --for=condition=Ready "inferenceservice/$MODEL_NAME" -n "$NAMESPACE" --timeout=600s
GOOD_URI="s3://mlpipeline/v2/artifacts/DRY-RUN/model"
EXPECTED_VERSION="DRY-RUN-VERSION"
GOOD_DIGEST=$(printf '0%.0s' {1..64})
if ! ((DRY_RUN)); then
  GOOD_URI=$(isvc_field '{.spec.predictor.containers[0].env[?(@.name=="STORAGE_URI")].value}')
  EXPECTED_VERSION=$(isvc_field '{.metadata.labels.churnflow\.io/model-version}')
  GOOD_DIGEST=$(isvc_field '{.spec.predictor.containers[0].env[?(@.name=="CHURNFLOW_METADATA_SHA256")].value}')
  [[ -n "$GOOD_DIGEST" ]] || fail "the deployed InferenceService carries no CHURNFLOW_METADATA_SHA256"
fi
ok "serving $GOOD_URI (model version $EXPECTED_VERSION)"

step "score: the classic churn request over v1 and v2 through the ingress"
start_port_forward
score "/v1/models/$MODEL_NAME:predict" "$WORKDIR/v1-request.json" "$WORKDIR/v1-answer.json"
if ! ((DRY_RUN)); then
  json_field "$WORKDIR/v1-answer.json" '0 <= d["predictions"][0]["probability"] <= 1' | grep -qx True ||
    fail "v1 answer: $(cat "$WORKDIR/v1-answer.json")"
fi
ok "v1 answered"
version=$(served_version)
ok "v2 answered"

step "served version: the v2 answer's model_version is the one the pipeline deployed"
[[ "$version" == "$EXPECTED_VERSION" ]] || fail "served $version, expected $EXPECTED_VERSION"
ok "model $version serves"

if [[ "$MODE" == Serverless ]]; then
  step "canary that passes: 20% on a new revision, promoted"
  run "$CHURNFLOW" deploy --model-uri "$GOOD_URI" --namespace "$NAMESPACE" --image "$SERVE_IMAGE" --store-secret "" \
    --deployment-mode "$MODE" --model-version "$EXPECTED_VERSION" --metadata-sha256 "$GOOD_DIGEST" \
    --run-name "cluster-e2e canary that should pass" --canary-percent 20 --timeout 600
  if ! ((DRY_RUN)); then
    [[ -z "$(isvc_field '{.spec.predictor.canaryTrafficPercent}')" ]] || fail "the canary was not promoted"
  fi
  ok "promoted"
else
  step "canary that passes: skipped (RawDeployment has no canaryTrafficPercent)"
fi

step "canary that fails: a model that does not exist never turns Ready; the rollout is rolled back"
canary=()
[[ "$MODE" == Serverless ]] && canary=(--canary-percent 20)
say "$CHURNFLOW deploy --model-uri $MISSING_MODEL_URI ... ${canary[*]} --timeout 300   (must fail)"
if ! ((DRY_RUN)); then
  if "$CHURNFLOW" deploy --model-uri "$MISSING_MODEL_URI" --namespace "$NAMESPACE" --image "$SERVE_IMAGE" --store-secret "" \
    --deployment-mode "$MODE" --run-name "cluster-e2e canary that should fail" "${canary[@]}" --timeout 300 \
    2>"$WORKDIR/failed-rollout.log"; then
    fail "a rollout of a missing model succeeded"
  fi
  cat "$WORKDIR/failed-rollout.log"
  restored=$(isvc_field '{.spec.predictor.containers[0].env[?(@.name=="STORAGE_URI")].value}')
  [[ "$restored" == "$GOOD_URI" ]] || fail "after the rollback the InferenceService points at $restored"
fi
run kubectl wait --for=condition=Ready "inferenceservice/$MODEL_NAME" -n "$NAMESPACE" --timeout=600s
version=$(served_version)
[[ "$version" == "$EXPECTED_VERSION" ]] || fail "after the rollback $version serves, expected $EXPECTED_VERSION"
ok "rolled back: model $version still serves"

echo
if ((DRY_RUN)); then
  echo "cluster-e2e: dry run complete ($STEP steps); rendered files in $WORKDIR"
else
  echo "cluster-e2e: PASSED ($STEP steps; logs and answers in $WORKDIR)"
fi
