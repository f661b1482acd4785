# shellcheck shell=bash
# Sourced by scripts/test and scripts/test-servers.
#
# bounded LIMIT COMMAND...: runs COMMAND; after LIMIT (a `timeout` duration: 40m) stops it
# and every process it started (the test binaries, the servers they run), and fails with
# timeout's status (124) and a message naming COMMAND. A test that hangs then fails the run
# in bounded time, and libtest has named it ("has been running for over 60 seconds").
bounded() {
    local limit=$1 status=0
    shift
    timeout --kill-after=30s "$limit" "$@" || status=$?
    if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
        echo "bounded: \`$*\` did not finish within $limit and was stopped;" \
            "the test still running is named above (\"has been running for over 60 seconds\")" >&2
    fi
    return "$status"
}
