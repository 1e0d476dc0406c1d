#!/usr/bin/env bash
# Remakes the example certificates: a CA, a listener certificate (localhost, 127.0.0.1,
# cache.example.test), a second one for *.admin.example.test, and the proxy's client
# certificate for TLS backends. ECDSA P-256, valid ten years.
set -euo pipefail
cd "$(dirname "$0")"
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
key ca.key
openssl req -x509 -new -key ca.key -days 3650 -subj "/CN=Switchyard example CA" -out ca.pem
leaf() { # name san...
  local name=$1 san=$2
  key "$name.key"
  openssl req -new -key "$name.key" -subj "/CN=$name" -out "$name.csr"
  openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 \
    -extfile <(printf "subjectAltName=%s\nbasicConstraints=CA:FALSE\n" "$san") -out "$name.pem" 2>/dev/null
  rm "$name.csr"
}
leaf listener "DNS:localhost,IP:127.0.0.1,DNS:cache.example.test"
leaf admin "DNS:*.admin.example.test"
leaf proxy-client "DNS:proxy.example.test"
rm -f ca.srl ca.key
