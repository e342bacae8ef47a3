#!/usr/bin/env bash
# test_rpcd_keys.sh RPCD - rpcd with identities (SECURITY.md): keys from
# rpcd keygen, a server with --key and --allow, callers with --key and
# --server-key, a hop calling onward with its own key (--next-key after its
# --next). A caller with a key on the list gets through; one without keys,
# one that expects another server key, one not on the list and one calling
# a method not allowed to it are each refused with the status and a
# message that say why, and the server logs the refusals; flags that do
# not go together and a key file others can read are refused at start.
set -u
rpcd=$(realpath "$1")
test_name=rpcd-keys
. "$(dirname "$0")/lib.sh"
cd "$dir" || exit 1

for who in a m c x; do "$rpcd" keygen "$who.key" >"$who.pub" || fail "keygen $who"; done
A=$(cat a.pub) M=$(cat m.pub) C=$(cat c.pub) X=$(cat x.pub)
check "keygen prints one public key line" grep -Eq '^dctx-ed25519:[A-Za-z0-9_-]{43}$' a.pub
cat >allow.txt <<ALLOW
# who may call A
$C
$M /dctx.demo.Demo/*
ALLOW

a="tcp://127.0.0.1:$(free_port)"
serve A --listen "$a" --key a.key --allow allow.txt --metrics-listen 127.0.0.1:0
check "the serving line names the server's key" grep -q "\"key\":\"$A\"" A.log

out=$(call "$a" /dctx.demo.Demo/Echo --data hi --timeout 5s --key c.key --server-key "$A")
check "a caller on the allow list gets through" test "$out" = "$(printf 'OK\nhi')"

out=$(timeout 60 "$rpcd" bench "$a" /dctx.demo.Demo/Echo --calls 200 --concurrency 4 \
    --key c.key --server-key "$A" 2>/dev/null)
check "rpcd bench with --key and --server-key: 200 calls OK ($out)" \
    grep -q '"by_status":{"OK":200}' <<<"$out"

refused() { # what, exit code, text, then rpcd call's arguments
    local what=$1 code=$2 text=$3 out rc
    shift 3
    out=$(call "$@" --timeout 5s 2>&1)
    rc=$?
    check "$what: exit $code (got $rc)" test "$rc" -eq "$code"
    check "... saying \"$text\" ($(tail -n 1 <<<"$out"))" grep -qF -- "$text" <<<"$out"
}
refused "a caller without keys" 16 "admits only peers with keys" "$a" /dctx.demo.Demo/Echo
refused "a caller expecting another server key" 16 "the server is $A" \
    "$a" /dctx.demo.Demo/Echo --key c.key --server-key "$X"
refused "a caller not on the allow list" 7 "$X is not on the server's allow list" \
    "$a" /dctx.demo.Demo/Echo --key x.key --server-key "$A"
refused "a caller calling a method not allowed to it" 7 "may not call /dctx.Admin/Stats" \
    "$a" /dctx.Admin/Stats --key m.key --server-key "$A"
check "the server logs the refusal with the peer's key" \
    wait_line A.log "\"event\":\"denied\",.*\"peer\":\"$X\""
check "... and the failed handshake with the peer's address" \
    wait_line A.log '"event":"unauthenticated","peer":"127.0.0.1:'

# The metrics count what the log says: sealed connections by AEAD (the
# callers with keys: Echo, bench, the unlisted and the method-limited
# one), the refused handshake and the two denied calls.
metrics=$(http "http://$(grep -o '"metrics":"[^"]*"' A.log | head -n 1 | cut -d'"' -f4)/metrics")
value() { awk -v k="$1" '$1 == k { print $2 }' <<<"$metrics"; }
sealed=$(($(value 'dctx_server_connections_sealed_total{aead="aes256gcm"}') + \
    $(value 'dctx_server_connections_sealed_total{aead="chacha20poly1305"}')))
check "metrics: at least 4 sealed connections ($sealed)" test "$sealed" -ge 4
check "metrics: 2 calls denied" test "$(value dctx_server_calls_denied_total)" = 2
check "metrics: the handshake without keys counted" \
    test "$(value dctx_server_unauthenticated_total)" -ge 1

# A hop calls onward with its own key; its own callers need no list.
m="ipc://$dir/m.ipc"
serve M --listen "$m" --key m.key --next "$a" --next-key "$A"
out=$(call "$m" /dctx.demo.Demo/Chain --data 1ms --timeout 5s --key c.key --server-key "$M")
check "a hop calls onward with its own key (Chain through M answered by A)" \
    test "$(sed -n 2p <<<"$out")" = A
n="ipc://$dir/n.ipc"
serve N --listen "$n" --next "$a"
check "a server without --key warns that its peers are not authenticated" \
    wait_line N.log '"event":"peers_not_authenticated"'
refused "a hop without keys to a server with them: Chain fails" 16 "admits only peers with keys" \
    "$n" /dctx.demo.Demo/Chain --data 1ms

usage() { # what, then rpcd's arguments: exit 64 naming the flag
    local what=$1 flag=$2
    shift 2
    "$rpcd" "$@" >/dev/null 2>err.txt
    local rc=$?
    check "$what: exit 64 (got $rc)" test "$rc" -eq 64
    check "... naming $flag" grep -q -- "$flag" err.txt
}
usage "--next-key before any --next" --next-key serve --listen "ipc://$dir/u.ipc" --next-key "$A"
usage "--allow without --key" --allow serve --listen "ipc://$dir/u.ipc" --allow allow.txt
usage "--key without --server-key" --server-key call "$a" /x.Y/Z --key c.key
usage "--server-key that is not a key" --server-key call "$a" /x.Y/Z --key c.key --server-key nope
cp c.key open.key && chmod 644 open.key
"$rpcd" call "$a" /dctx.demo.Demo/Echo --key open.key --server-key "$A" >/dev/null 2>err.txt
rc=$?
check "a key file others can read is refused: exit 7 (got $rc)" test "$rc" -eq 7
check "... saying chmod 600" grep -q "chmod 600" err.txt

stop_servers # their logs are whole now
check "... once" test "$(grep -c '"event":"peers_not_authenticated"' N.log)" -eq 1
check "a server with a key does not warn of unauthenticated peers" \
    bash -c "! grep -q peers_not_authenticated A.log"

[ "$failures" -eq 0 ] && echo "all key checks passed"
exit $((failures > 0))
