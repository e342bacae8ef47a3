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
