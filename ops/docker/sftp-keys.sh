#!/bin/bash
# atmoz/sftp start-up hook: use the generated host key and authorize the client key for acme.
cp /keys/ssh_host_ed25519_key /etc/ssh/ssh_host_ed25519_key
chmod 600 /etc/ssh/ssh_host_ed25519_key
mkdir -p /home/acme/.ssh
cp /keys/client_ed25519.pub /home/acme/.ssh/authorized_keys
chown -R 1001:100 /home/acme/.ssh
chmod 600 /home/acme/.ssh/authorized_keys
