#!/usr/bin/env bash
# Make a local CA and certificates for trying wsgate's TLS (examples/tls/wsgate-tls.yaml) with the
# openssl CLI. Usage: examples/tls/make-certs.sh [DIR]   (default: examples/tls/certs)
#
#   ca.crt                      the local CA (trust it in clients: python3 -m websockets needs
#                               SSL_CERT_FILE=DIR/ca.crt)
#   chat.crt/.key               server certificate for chat.example.test, localhost, 127.0.0.1
#   api.crt/.key                server certificate for api.example.test (picked by SNI)
#   client.crt/.key             client certificate (mTLS), CN=client
#   backend.crt/.key            backend certificate for backend.internal and 127.0.0.1
#   other-ca.crt, other.crt/.key  a second, unrelated CA and a certificate it signed (negative tests)
#
# Keys are ECDSA P-256 (fast to make, supported everywhere); certificates are valid for 30 days.
# For trying things out only: the CA key sits next to the certificates, unencrypted.
set -euo pipefail
dir="${1:-$(dirname "$0")/certs}"
mkdir -p "$dir"
cd "$dir"
days=30

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }

ca() {  # ca NAME CN
  key "$1.key"
  openssl req -x509 -new -key "$1.key" -sha256 -days "$days" -subj "/CN=$2" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$1.crt"
}

leaf() {  # leaf NAME CA CN EXTENDED_KEY_USAGE [SUBJECT_ALT_NAMES]
  key "$1.key"
  openssl req -new -key "$1.key" -subj "/CN=$3" -out "$1.csr"
  {
    echo "basicConstraints=critical,CA:FALSE"
    echo "keyUsage=critical,digitalSignature"
    echo "extendedKeyUsage=$4"
    if [ -n "${5:-}" ]; then echo "subjectAltName=$5"; fi
  } >"$1.ext"
  openssl x509 -req -in "$1.csr" -CA "$2.crt" -CAkey "$2.key" -CAcreateserial -sha256 \
    -days "$days" -extfile "$1.ext" -out "$1.crt" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}

ca ca "wsgate example CA"
leaf chat ca chat.example.test serverAuth "DNS:chat.example.test,DNS:localhost,IP:127.0.0.1"
leaf api ca api.example.test serverAuth "DNS:api.example.test"
leaf client ca client clientAuth
leaf backend ca backend.internal serverAuth "DNS:backend.internal,IP:127.0.0.1"
ca other-ca "unrelated CA"
leaf other other-ca backend.internal serverAuth "DNS:backend.internal,IP:127.0.0.1"
rm -f ./*.srl
chmod 600 ./*.key
echo "certificates in $(pwd)"
