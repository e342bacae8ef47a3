#!/bin/sh
# test-compose-checks.sh COMPOSE_FILE - the checks of compose-plan.awk and
# yaml-flat.awk catch what they should: the file as it is passes; each
# mutation below (one sed edit of a copy) must be rejected, with a message
# containing the text given. POSIX sh and awk; no processes are started.
set -eu

compose=${1:?usage: test-compose-checks.sh COMPOSE_FILE}
here=$(cd "$(dirname "$0")" && pwd)
dir=$(mktemp -d /tmp/dctx-deploy-checks-XXXXXX)
trap 'rm -rf "$dir"' EXIT
failures=0

check() { # FILE: 0 if accepted; messages in $dir/err
    awk -f "$here/yaml-flat.awk" "$1" >"$dir/flat" 2>"$dir/err" &&
        awk -v dir="$dir" -f "$here/compose-plan.awk" "$dir/flat" >/dev/null 2>>"$dir/err"
}

check "$compose" || { cat "$dir/err" >&2; echo "FAIL: $compose itself is rejected" >&2; exit 1; }
echo "ok: $compose is accepted"

# reject 'SED EXPRESSION' 'EXPECTED MESSAGE' - what the mutation stands for
reject() {
    sed "$1" "$compose" >"$dir/mutant.yml"
    if cmp -s "$compose" "$dir/mutant.yml"; then
        echo "FAIL: the edit $1 changes nothing (the file changed?)" >&2
        failures=$((failures + 1))
    elif check "$dir/mutant.yml"; then
        echo "FAIL: accepted: $3" >&2
        failures=$((failures + 1))
    elif ! grep -qF -- "$2" "$dir/err"; then
        echo "FAIL: $3: rejected, but not with \"$2\":" >&2
        sed 's/^/    /' "$dir/err" >&2
        failures=$((failures + 1))
    else
        echo "ok: rejected: $3 ($(head -n 1 "$dir/err"))"
    fi
}

reject 's|--next tcp://svc-b:7002|--next tcp://svc-x:7002|' 'names no server' \
    'a --next naming no service'
reject 's|--next tcp://svc-b:7002|--next tcp://svc-b:7009|' 'does not listen on port' \
    'a --next to a port its service does not listen on'
reject 's|--name svc-a |--name svc-a --shutdown-grace 1s |' 'unknown flag --shutdown-grace' \
    'a flag beyond the fixed command line'
reject 's|rpcd serve --listen tcp://0.0.0.0:7003|rpcd serve --listn tcp://0.0.0.0:7003|' 'unknown flag --listn' \
    'a misspelt flag'
reject 's|--listen tcp://0.0.0.0:7001|--listen tcp://127.0.0.1:7001|' 'tcp://0.0.0.0:PORT expected' \
    'a listen address other containers cannot reach'
reject 's|command: rpcd serve --listen tcp://0.0.0.0:7002 |command: rpcd serv --listen tcp://0.0.0.0:7002 |' 'the command is serve or call' \
    'an rpcd command that does not exist'
reject 's|--next tcp://svc-c:7003 ||' 'two heads' \
    'a chain broken in two'
reject 's|--name svc-c --log -|--name svc-c --next tcp://gateway:7000 --log -|' 'cycle' \
    'a chain that loops'
reject 's|--timeout 300ms$|--timeout soon|' 'not a duration' \
    'a client call with a bad duration'
reject 's|/dctx.demo.Demo/Chain --data 10s --cancel-after 200ms|/dctx.demo.Demo/Chain --data 100ms --cancel-after 200ms|' 'the cancel scenario' \
    'a cancel scenario that cannot cancel (the leaf answers first)'
reject 's| --trace$||' 'the values scenario' \
    'the values scenario without --trace'
reject 's|rpcd call tcp://gateway:7000 /dctx.demo.Demo/Chain --data 10s --timeout|rpcd call tcp://svc-a:7001 /dctx.demo.Demo/Chain --data 10s --timeout|' 'not to the head' \
    'a scenario that skips the gateway'
reject 's|rpcd call tcp://svc-c:7003 /dctx.Admin/Stats$|rpcd call tcp://svc-d:7003 /dctx.Admin/Stats|' 'names no server' \
    'a client call to a host that is not a service'
reject 's|rpcd call tcp://gateway:7000 /dctx.demo.Demo/Chain --data 20ms|rpcd call tcp://gateway:7000 /dctx.demo.Demo/Chian --data 20ms|' 'is not one rpcd serves' \
    'a method rpcd does not serve'
reject 's|^        rpcd call tcp://svc-c:7003|        set -e; rpcd call tcp://svc-c:7003|' 'only echo, comments and rpcd call' \
    'shell code in the client script'
reject '/^      svc-b:$/,/^        condition: service_healthy$/d' 'depends_on svc-b' \
    'a client that does not wait for a service'
reject '/^  svc-a:$/,/^  svc-b:$/{/^    depends_on:$/,/condition: service_healthy$/d;}' 'depends_on svc-b with condition service_healthy expected (its --next)' \
    'a service that does not wait for its next hop'
reject 's|test: rpcd call tcp://127.0.0.1:7002|test: rpcd call tcp://127.0.0.1:7009|' 'not a port svc-b listens on' \
    'a healthcheck on the wrong port'
reject '/^  svc-b:$/,/image:/s|image: dctx-rpcd:local|image: other:1|' 'the others use' \
    'services on different images'
reject 's|^    build: \.$|    build: ./rpcd|' 'the repository' \
    'a build context other than the repository'
reject 's|--data 10s --timeout 300ms|--data ${DATA} --timeout 300ms|' 'variable' \
    'a ${VARIABLE}'
reject 's|^      - "127.0.0.1:7000:7000"|      - [127.0.0.1:7000:7000]|' 'not in the simple shape' \
    'a flow list'
reject 's|^  svc-a:$|  svc-a: \&a|' 'not in the simple shape' \
    'an anchor'
reject 's|^    image: dctx-rpcd:local$|    image: dctx-rpcd:local\n    entrypoint: /bin/sh|' 'unknown key entrypoint' \
    'an entrypoint replacing the command'
reject 's|--grpc-listen 0.0.0.0:8000|--grpc-listen 127.0.0.1:8000|' '--grpc-listen 127.0.0.1:8000: 0.0.0.0:PORT expected' \
    'a gRPC address no other host can reach'
reject 's|--grpc-listen 0.0.0.0:8000|--grpc-listn 0.0.0.0:8000|' 'unknown flag --grpc-listn' \
    'a misspelt gRPC flag'
reject 's|--grpc-forward tenant|--grpc-forward Tenant|' 'a lowercase metadata key expected' \
    'a --grpc-forward key gRPC cannot carry'
reject 's|--grpc-listen 0.0.0.0:8000 ||' '--grpc-forward needs --grpc-listen' \
    'a --grpc-forward without --grpc-listen'
reject 's|--grpc-listen 0.0.0.0:8000 --grpc-forward tenant ||' 'the head takes gRPC calls' \
    'a gateway without its gRPC edge'
reject 's|--grpc-listen 0.0.0.0:8000|--grpc-listen 0.0.0.0:7000|' 'is one of its --listen ports' \
    'a gRPC port the gateway already listens on'
reject '/"127.0.0.1:8000:8000"/d' 'port 8000 not published' \
    'a gRPC port not published on the host'
reject 's|--name svc-c --log -|--name svc-c --grpc-listen 0.0.0.0:8000 --log -|' 'only the head (gateway) takes gRPC calls' \
    'a gRPC edge on a service behind the gateway'

[ "$failures" -eq 0 ] || { echo "test-compose-checks: $failures check(s) missed" >&2; exit 1; }
echo "test-compose-checks: every mutation rejected"
