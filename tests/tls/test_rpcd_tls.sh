#!/usr/bin/env bash
# test_rpcd_tls.sh RPCD - rpcd over tls+tcp:// with certificates the test
# makes itself (openssl, now; nothing committed): a server with
# --tls-cert and --tls-client-ca (mutual TLS), callers with --tls-ca,
# --tls-server-name and --tls-cert. A caller with a good certificate gets
# through, and so does a hop calling onward over mutual TLS; no client
# certificate, one from another CA, a wrong server name, no CA and an
# expired server certificate are each refused UNAVAILABLE with a message
# that says the TLS handshake failed. 77: openssl is missing.
set -u
rpcd=$(realpath "$1") # the test works in its scratch directory
test_name=rpcd-tls
command -v openssl >/dev/null || {
    echo "skip: openssl is needed"
    exit 77
}
. "$(dirname "$0")/../rpcd/lib.sh"
. "$(dirname "$0")/../support/certs.sh"
cd "$dir" || exit 1

the_certs
cert expired ca1 -1 "DNS:localhost,IP:127.0.0.1"
[ -s expired.pem ] || { echo "FAIL: openssl did not make expired.pem"; exit 1; }

a="tls+tcp://127.0.0.1:$(free_port)"
serve A --listen "$a" --tls-cert server.pem --tls-client-ca ca1.crt
good=(--tls-ca ca1.crt --tls-server-name localhost --tls-cert client.pem)

out=$(call "$a" /dctx.demo.Demo/Echo --data hi --timeout 5s "${good[@]}")
check "a caller with a certificate of the CA the server asks for gets through" \
    test "$out" = "$(printf 'OK\nhi')"

refused() { # what, then rpcd call's arguments: UNAVAILABLE, the handshake named
    local what=$1 out rc
    shift
    out=$(call "$@" --timeout 5s 2>&1)
    rc=$?
    check "$what: refused UNAVAILABLE (exit $rc)" test "$rc" -eq 14
    check "... saying the TLS handshake failed ($(tail -n 1 <<<"$out"))" \
        grep -q "TLS handshake failed" <<<"$out"
}
refused "no client certificate" "$a" /dctx.demo.Demo/Echo --tls-ca ca1.crt --tls-server-name localhost
refused "a client certificate of another CA" "$a" /dctx.demo.Demo/Echo \
    --tls-ca ca1.crt --tls-server-name localhost --tls-cert rogue.pem
refused "a wrong server name" "$a" /dctx.demo.Demo/Echo \
    --tls-ca ca1.crt --tls-server-name elsewhere.example --tls-cert client.pem
refused "no CA to check the server with" "$a" /dctx.demo.Demo/Echo \
    --tls-server-name localhost --tls-cert client.pem

b="tls+tcp://127.0.0.1:$(free_port)"
serve B --listen "$b" --tls-cert expired.pem
refused "an expired server certificate" "$b" /dctx.demo.Demo/Echo \
    --tls-ca ca1.crt --tls-server-name localhost

# A hop calls onward over mutual TLS with its own certificate.
m="ipc://$dir/m.ipc"
serve M --listen "$m" --next "$a" --tls-cert client.pem --tls-ca ca1.crt --tls-server-name localhost
for _ in $(seq 100); do # its channel to A connected (5 s at most)
    call "$m" /dctx.Admin/Stats 2>/dev/null | grep -q '"connected":true' && break
    sleep 0.05
done
out=$(call "$m" /dctx.demo.Demo/Chain --data 1ms --timeout 5s)
check "a hop calls onward over mutual TLS (Chain through M answered by A)" \
    test "$(sed -n 2p <<<"$out")" = A

"$rpcd" serve --listen "tls+tcp://127.0.0.1:$(free_port)" >/dev/null 2>err.txt
check "tls+tcp:// with no --tls-cert: exit 64" test $? -eq 64
check "... naming the flag" grep -q -- "--tls-cert" err.txt
"$rpcd" serve --listen "tls+tcp://127.0.0.1:$(free_port)" --tls-cert nothing.pem >/dev/null 2>err.txt
check "a --tls-cert that does not exist: refused at start" test $? -ne 0
check "... naming the file's trouble" grep -q "does not exist" err.txt

[ "$failures" -eq 0 ] && echo "all TLS checks passed"
exit $((failures > 0))
