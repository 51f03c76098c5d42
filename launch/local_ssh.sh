#!/usr/bin/env bash
# Two "hosts" on this machine for the DeepSpeed launcher's multi-node (PDSH over ssh) path:
# `localhost` and `127.0.0.1`, both served by a local sshd with a key of root's own.
#
#   launch/local_ssh.sh          # install openssh-server/pdsh if missing, key, start sshd
#   launch/local_ssh.sh stop     # stop the sshd this script started
#
# Needs root (apt-get, sshd). For tests and trying `launch/deepspeed.sh` with a hostfile of
# two hosts; a throwaway setup, not a template for a real cluster. Idempotent.
set -euo pipefail

PIDFILE=/run/gppf-sshd.pid
KEY=${HOME}/.ssh/id_ed25519

log() { echo "local_ssh: $*" >&2; }

if [[ ${1:-} == stop ]]; then
  if [[ -f $PIDFILE ]]; then
    kill "$(cat "$PIDFILE")" 2>/dev/null || true
  fi
  rm -f "$PIDFILE"
  exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
  log "must run as root (installs packages, starts sshd)"
  exit 1
fi

missing=()
command -v sshd >/dev/null || [[ -x /usr/sbin/sshd ]] || missing+=(openssh-server)
command -v pdsh >/dev/null || missing+=(pdsh)
command -v ssh >/dev/null || missing+=(openssh-client)
if ((${#missing[@]})); then
  log "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

install -d -m 0700 "${HOME}/.ssh"
[[ -f $KEY ]] || ssh-keygen -q -t ed25519 -N "" -f "$KEY"
touch "${HOME}/.ssh/authorized_keys"
grep -qF "$(cat "$KEY.pub")" "${HOME}/.ssh/authorized_keys" || cat "$KEY.pub" >>"${HOME}/.ssh/authorized_keys"
chmod 0600 "${HOME}/.ssh/authorized_keys"
ssh-keygen -A >/dev/null
install -d -m 0755 /run/sshd

if ! ssh -o BatchMode=yes -o ConnectTimeout=3 -o StrictHostKeyChecking=accept-new localhost true 2>/dev/null; then
  if [[ -f $PIDFILE ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
    log "sshd runs (pid $(cat "$PIDFILE")) but refuses the key"
    exit 1
  fi
  log "starting sshd on port 22"
  /usr/sbin/sshd -p 22 -o PermitRootLogin=prohibit-password -o PidFile="$PIDFILE"
fi
for host in localhost 127.0.0.1; do
  ssh -o BatchMode=yes -o ConnectTimeout=5 -o StrictHostKeyChecking=accept-new "$host" true
done
log "ready: ssh and pdsh reach localhost and 127.0.0.1"
