#!/bin/sh
# One-shot set-up for the compose stack: throw-away SSH keys, known_hosts, and sample TLog files.
set -eu
cd /keys
[ -f ssh_host_ed25519_key ] || ssh-keygen -q -t ed25519 -N '' -f ssh_host_ed25519_key
[ -f client_ed25519 ] || ssh-keygen -q -t ed25519 -N '' -f client_ed25519
echo "sftp $(cut -d' ' -f1,2 ssh_host_ed25519_key.pub)" > known_hosts
chmod 644 client_ed25519 known_hosts ssh_host_ed25519_key.pub
mkdir -p /outbound/orders/archive /outbound/orders/error
python - <<'PY'
from worker.tlogfactory import mix, sample_bytes
import pathlib
out = pathlib.Path("/outbound/orders")
(out / "acme_OrderTLog_instore_sample.json").write_bytes(sample_bytes("inStoreOrdersSample.json"))
(out / "acme_OrderTLog_sendsale_sample.json").write_bytes(sample_bytes("sendSaleOrdersSample.json"))
for name, data in mix(50, seed=1, bad_every=20, order_prefix="ACME"):
    (out / name).write_bytes(data)
PY
chown -R 1001:100 /outbound
