# certs.sh - sourced by tests that make their own certificates with
# openssl, in the current directory (nothing committed).
#
# ca NAME: a CA valid for a day (NAME.crt, NAME.key). cert NAME CA DAYS
# [SAN]: a certificate signed by CA, with its key in NAME.pem (the one
# file nng and dctx take); DAYS -1 makes one that expired yesterday.
ca() {
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 \
        -subj "/CN=$1" -keyout "$1.key" -out "$1.crt" 2>/dev/null
}
cert() {
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=$1" \
        -keyout "$1.key" -out "$1.csr" 2>/dev/null
    printf 'subjectAltName=%s\n' "${4:-DNS:$1}" >"$1.ext"
    openssl x509 -req -in "$1.csr" -CA "$2.crt" -CAkey "$2.key" -CAcreateserial -days "$3" \
        -extfile "$1.ext" -out "$1.crt" 2>/dev/null
    cat "$1.crt" "$1.key" >"$1.pem"
}

# the_certs: two CAs (ca1, ca2); server (ca1, for localhost and
# 127.0.0.1), client (ca1) and rogue (ca2); exits the test if openssl
# made any of them empty.
the_certs() {
    ca ca1
    ca ca2
    cert server ca1 1 "DNS:localhost,IP:127.0.0.1"
    cert client ca1 1
    cert rogue ca2 1
    local f
    for f in ca1.crt ca2.crt server.pem client.pem rogue.pem; do
        [ -s "$f" ] || { echo "FAIL: openssl did not make $f"; exit 1; }
    done
}
