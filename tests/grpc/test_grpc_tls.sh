#!/bin/bash
# The gRPC edge over TLS, with certificates the test makes itself
# (openssl): rpcd's gateway with --grpc-tls-cert (and --grpc-tls-client-ca,
# mutual TLS) called by Python's grpcio; a Chain whose next hop is a Python
# gRPC server over TLS (--next grpcs://, rpcd's --tls-ca, --tls-server-name
# and --tls-cert). Callers with the right CA and certificate get through;
# plaintext, another CA's certificate, no certificate where one is asked
# for, a wrong server name are refused; bad TLS files are refused when
# rpcd starts, saying which.
# Usage: test_grpc_tls.sh RPCD. 77: python3-grpcio or openssl is missing.
rpcd=$(realpath "$1") # the test works in its scratch directory
test_name=grpc-tls
here=$(cd "$(dirname "$0")" && pwd)
py=/usr/bin/python3
$py -c 'import grpc' 2>/dev/null || { echo "skip: /usr/bin/python3 has no grpc (python3-grpcio)"; exit 77; }
command -v openssl >/dev/null || { echo "skip: openssl is needed"; exit 77; }
source "$here/../rpcd/lib.sh"
source "$here/../support/certs.sh"
cd "$dir" || exit 1

the_certs

# grpc_call TARGET METHOD DATA [CA [CERT [NAME]]]: one call with grpcio,
# printing the status name and the reply or the details; TLS when CA is
# given (CERT: the client's certificate and key, one PEM file).
grpc_call() {
    $py - "$@" <<'PY'
import sys, grpc
target, method, data = sys.argv[1:4]
ca, cert, name = (sys.argv[4:] + [None, None, None])[:3]
if ca:
    read = lambda f: open(f, "rb").read()
    creds = grpc.ssl_channel_credentials(read(ca), read(cert) if cert else None,
                                         read(cert) if cert else None)
    opts = [("grpc.ssl_target_name_override", name)] if name else []
    ch = grpc.secure_channel(target, creds, options=opts)
else:
    ch = grpc.insecure_channel(target)
try:
    r = ch.unary_unary(method)(data.encode(), timeout=3)
    print("OK", r.decode())
except grpc.RpcError as e:
    print(e.code().name, e.details())
PY
}
is() { # want, then grpc_call's arguments: the output starts with want
    local want=$1 out
    shift
    out=$(grpc_call "$@")
    [[ "$out" == "$want"* ]] || { echo "  got: $out"; return 1; }
}

# ===== The gateway with a server certificate =====
pg=$(free_port)
serve g --listen "tcp://127.0.0.1:$(free_port)" --grpc-listen "127.0.0.1:$pg" \
    --grpc-tls-cert server.pem
check "the gateway logs it takes gRPC over TLS" \
    wait_line "$dir/g.log" "\"event\":\"grpc_listening\".*\"port\":$pg.*\"tls\":\"server\""
check "a caller that trusts the gateway's CA gets through" \
    is "OK hi" "localhost:$pg" /dctx.demo.Demo/Echo hi ca1.crt
check "... and to the gateway's health" \
    is "OK" "localhost:$pg" /grpc.health.v1.Health/Check "" ca1.crt
check "a plaintext caller is refused UNAVAILABLE" \
    is "UNAVAILABLE" "127.0.0.1:$pg" /dctx.demo.Demo/Echo hi
check "a caller that trusts another CA is refused UNAVAILABLE" \
    is "UNAVAILABLE" "localhost:$pg" /dctx.demo.Demo/Echo hi ca2.crt
check "a caller that expects another name is refused UNAVAILABLE" \
    is "UNAVAILABLE" "127.0.0.1:$pg" /dctx.demo.Demo/Echo hi ca1.crt "" other.example
check "gRPC's own error lines (the failed handshakes) are JSON lines of rpcd's log" \
    wait_line "$dir/g.log" '"event":"grpc_log","severity":"E".*Handshake failed'

# ===== Mutual TLS =====
pm=$(free_port)
serve m --listen "tcp://127.0.0.1:$(free_port)" --grpc-listen "127.0.0.1:$pm" \
    --grpc-tls-cert server.pem --grpc-tls-client-ca ca1.crt
check "the gateway logs mutual TLS" \
    wait_line "$dir/m.log" "\"event\":\"grpc_listening\".*\"tls\":\"mutual\""
check "mutual TLS: a caller with a certificate of the CA asked for gets through" \
    is "OK hi" "localhost:$pm" /dctx.demo.Demo/Echo hi ca1.crt client.pem
check "mutual TLS: a caller without a certificate is refused UNAVAILABLE" \
    is "UNAVAILABLE" "localhost:$pm" /dctx.demo.Demo/Echo hi ca1.crt
check "mutual TLS: a certificate of another CA is refused UNAVAILABLE" \
    is "UNAVAILABLE" "localhost:$pm" /dctx.demo.Demo/Echo hi ca1.crt rogue.pem

# ===== Bad flags and files, refused at start =====
refused() { # expected exit, expected stderr text, then rpcd serve's arguments
    local want=$1 text=$2
    shift 2
    timeout 10 "$rpcd" serve --listen "tcp://127.0.0.1:$(free_port)" "$@" >/dev/null 2>err
    local rc=$?
    [ "$rc" -eq "$want" ] && grep -q -- "$text" err || { echo "  exit $rc: $(cat err)"; return 1; }
}
check "--grpc-tls-cert without --grpc-listen: usage error" \
    refused 64 "needs --grpc-listen" --grpc-tls-cert server.pem
check "--grpc-tls-client-ca without --grpc-tls-cert: usage error" \
    refused 64 "needs --grpc-tls-cert" --grpc-listen "127.0.0.1:$(free_port)" \
    --grpc-tls-client-ca ca1.crt
check "--grpc-tls-cert naming no file: NOT_FOUND, named" \
    refused 5 "cannot use --grpc-tls-cert nothing.pem" --grpc-listen "127.0.0.1:$(free_port)" \
    --grpc-tls-cert nothing.pem
check "--grpc-tls-cert with a certificate but no key: refused, saying so" \
    refused 3 "not PEM with a certificate" --grpc-listen "127.0.0.1:$(free_port)" \
    --grpc-tls-cert server.crt
openssl pkcs8 -topk8 -in server.key -passout pass:secret -out encrypted.key 2>/dev/null
cat server.crt encrypted.key >encrypted.pem
check "--grpc-tls-cert with an encrypted key (gRPC takes no passphrase): refused" \
    refused 3 "not encrypted" --grpc-listen "127.0.0.1:$(free_port)" --grpc-tls-cert encrypted.pem
cat server.crt client.key >mismatched.pem
check "--grpc-tls-cert whose key is not the certificate's: refused, not taken for a port in use" \
    refused 3 "its own key" --grpc-listen "127.0.0.1:$(free_port)" --grpc-tls-cert mismatched.pem
check "--grpc-tls-client-ca that holds no certificate: refused" \
    refused 3 "not PEM with a certificate" --grpc-listen "127.0.0.1:$(free_port)" \
    --grpc-tls-cert server.pem --grpc-tls-client-ca ca1.key

# ===== Outbound: a Chain whose next hop is a gRPC server over TLS =====
pp=$(free_port)
$py "$here/py_server.py" "$pp" "$dir/py.jsonl" --tls server.crt server.key ca1.crt >py.out &
pids+=($!)
wait_line py.out listening || fail "py_server.py did not start"
px=$(free_port)
serve x --listen "tcp://127.0.0.1:$px" --next "grpcs://127.0.0.1:$pp" \
    --tls-ca ca1.crt --tls-server-name localhost --tls-cert client.pem
out=$(call "tcp://127.0.0.1:$px" /dctx.demo.Demo/Chain --data 5ms --timeout 5s 2>&1)
check "Chain through grpcs:// with the server's CA and a client certificate: OK" \
    grep -q "python:5ms" <<<"$out"
check "... the gRPC server saw the client's certificate" \
    grep -q '"peer_cn": "client"' "$dir/py.jsonl"
py_line=$(grep -c '"event": "call"' "$dir/py.jsonl")

py_refused() { # description, then serve's TLS arguments for the next hop: Chain fails
    local what=$1 name=$2
    shift 2
    local port
    port=$(free_port)
    serve "$name" --listen "tcp://127.0.0.1:$port" "$@"
    local out
    out=$(call "tcp://127.0.0.1:$port" /dctx.demo.Demo/Chain --data 5ms --timeout 5s 2>&1)
    check "$what: Chain fails UNAVAILABLE" grep -q "UNAVAILABLE" <<<"$out"
}
py_refused "grpcs:// without a client certificate where one is asked for" y \
    --next "grpcs://127.0.0.1:$pp" --tls-ca ca1.crt --tls-server-name localhost
py_refused "grpcs:// trusting another CA" z \
    --next "grpcs://127.0.0.1:$pp" --tls-ca ca2.crt --tls-server-name localhost \
    --tls-cert client.pem
py_refused "grpc:// (plaintext) to a TLS server" w --next "grpc://127.0.0.1:$pp"
check "no refused call reached the gRPC server's handler" \
    test "$(grep -c '"event": "call"' "$dir/py.jsonl")" -eq "$py_line"
check "--next grpcs:// with a --tls-ca that holds no certificate: refused at start" \
    refused 3 "cannot use --next grpcs://127.0.0.1:$pp" --next "grpcs://127.0.0.1:$pp" \
    --tls-ca ca1.key

stop_servers
for name in g m x y z w; do
    check "$name stopped clean" grep -q '"event":"stopped"' "$dir/$name.log"
done
[ "$failures" -eq 0 ] && echo "all passed" || echo "$failures failures"
exit $((failures > 0))
