# Sourced by the ops scripts: offline ImageNet weights from ../shared when present.
if [ -z "${KERAS_HOME:-}" ] && [ -d "$(dirname "${BASH_SOURCE[0]}")/../../shared/keras" ]; then
  KERAS_HOME="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../shared/keras" && pwd)"
  export KERAS_HOME
fi
export TF_CPP_MIN_LOG_LEVEL=${TF_CPP_MIN_LOG_LEVEL:-3}
