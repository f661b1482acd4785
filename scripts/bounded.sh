# shellcheck shell=bash
# Sourced by scripts/test and scripts/test-servers.
#
# bounded LIMIT COMMAND...: runs COMMAND; after LIMIT (a `timeout` duration: 40m) stops it
# and the processes it started in its process group (the test binaries, the redis-servers
# they run; a PostgreSQL that `pg_ctl` detached is not among them), and fails with
# timeout's status (124) and a message naming COMMAND. A test that hangs then fails the run
# in bounded time, and libtest has named it ("has been running for over 60 seconds").
bounded() {
    local limit=$1 status pid interrupted=""
    shift
    timeout --kill-after=30s "$limit" "$@" &
    pid=$!
    # timeout runs in a process group of its own, which the terminal's Ctrl-C does not
    # reach: an interrupt is passed on to it, and it stops its group.
    trap 'interrupted=1; kill -TERM "$pid" 2>/dev/null' INT TERM
    while :; do
        status=0
        wait "$pid" || status=$?
        # A trapped signal ends `wait` early, while timeout is still stopping its group.
        kill -0 "$pid" 2>/dev/null || break
    done
    trap - INT TERM
    if [ -n "$interrupted" ]; then
        echo "bounded: \`$*\` was interrupted" >&2
        return 130
    fi
    if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
        echo "bounded: \`$*\` did not finish within $limit and was stopped;" \
            "the test still running is named above (\"has been running for over 60 seconds\")" >&2
    fi
    return "$status"
}
