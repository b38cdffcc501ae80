# What .ci/run and .ci/engines share: sourced by both from the clone's root.
# The build cache lives outside the clone so repeated runs on one machine reuse it.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/agentry-target}"
export CARGO_TERM_COLOR=never
export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/agentry_test}"
export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"

# Debian packages, with one index update per run at the most.
apt_updated=0
apt_install() {
    if [ "$apt_updated" = 0 ]; then apt-get update -qq; apt_updated=1; fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@"
}
