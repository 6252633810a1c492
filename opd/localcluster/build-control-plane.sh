#!/usr/bin/env bash
# Build opd's local control plane (etcd + kube-apiserver + kube-controller-manager)
# from Debian packages, into a cache folder. Needs root for apt-get.
# Usage: build-control-plane.sh DEST
# Prints one line per step ("==> ..."), so callers can show progress, and "error: ..." on failure.
#
# Left on the system: the Debian packages it installs, and DEST. The apt source it adds for
# bookworm and its work folder are removed when it exits, however it exits (a failed build
# keeps only its logs, in the folder the error names).
# OPD_BUILD_DIR: work there and keep it. OPD_BUILD_ROOT: prefix for the system paths it reads
# and writes besides apt-get's own (/etc/debian_version, /etc/apt, /usr/share/gocode), for tests.
set -euo pipefail

dest=${1:?usage: build-control-plane.sh DEST}
version=1.20.2
root=${OPD_BUILD_ROOT:-}
apt_source=$root/etc/apt/sources.list.d/opd-bookworm.sources
work=
added_source=0
built=0
current="starting"

step() { current=$*; printf '==> %s\n' "$*"; }

cleanup() {
  if [ "$added_source" = 1 ]; then rm -f "$apt_source"; fi
  if [ -n "$work" ] && [ -z "${OPD_BUILD_DIR:-}" ]; then
    cd /
    if [ "$built" = 1 ]; then
      rm -rf "$work"
    else  # keep only the logs a failure points to
      find "$work" -mindepth 1 -maxdepth 1 ! -name '*.log' -exec rm -rf {} +
      rmdir "$work" 2>/dev/null || true
    fi
  fi
}
trap cleanup EXIT
# A signal ends the script through exit, so the EXIT trap runs for it too.
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'echo "error: $current failed (exit $?)" >&2' ERR

if [ "$(id -u)" != 0 ]; then
  echo "error: building the control plane needs root (apt-get); run as root or set OPD_CONTROL_PLANE_ASSETS" >&2
  exit 2
fi
if ! command -v apt-get >/dev/null; then
  echo "error: no apt-get: the control plane build needs Debian; set OPD_CONTROL_PLANE_ASSETS to a folder with etcd and kube-apiserver" >&2
  exit 2
fi

major=$(cut -d. -f1 "$root/etc/debian_version" 2>/dev/null || echo 12)
export DEBIAN_FRONTEND=noninteractive
work=${OPD_BUILD_DIR:-$(mktemp -d -t opd-k8s-build.XXXXXX)}

# Kubernetes 1.20 is only packaged (as source) in bookworm; its build needs Go <= 1.19.
step "adding an apt source for Debian bookworm (removed when the build ends): $apt_source"
bookworm_entry() {
  printf 'Types: %s\nURIs: http://deb.debian.org/debian\nSuites: bookworm\nComponents: main\n' "$1"
  printf 'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n'
}
added_source=1
if [ "$major" -ge 13 ]; then
  { bookworm_entry deb-src; echo; bookworm_entry deb; } > "$apt_source"
  go_pkg=golang-1.19-go
  goroot=/usr/lib/go-1.19
else
  bookworm_entry deb-src > "$apt_source"
  go_pkg=golang-go
  goroot=
fi

step "apt-get update"
apt-get update -qq
step "installing $go_pkg etcd-server rsync golang-github-modern-go-reflect2-dev make openssl ca-certificates"
apt-get install -y -qq --no-install-recommends "$go_pkg" etcd-server rsync \
  golang-github-modern-go-reflect2-dev make openssl ca-certificates >/dev/null
if [ -n "$goroot" ]; then export PATH="$goroot/bin:$PATH"; fi
step "go: $(go version)"

step "downloading the kubernetes source package (bookworm, ~35 MB)"
cd "$work"
apt-get source --download-only -qq kubernetes/bookworm >/dev/null 2>&1 || apt-get source --download-only -qq kubernetes >/dev/null
tarball=$(ls kubernetes_*.orig.tar.gz | head -n1)
step "unpacking $tarball"
mkdir -p src
tar -xzf "$tarball" -C src --strip-components=1
cd src

# reflect2 1.0.1 (vendored) segfaults under Go >= 1.18 on the first CRD create.
step "replacing vendored reflect2 with Debian's 1.0.2"
rm -rf vendor/github.com/modern-go/reflect2
cp -r "$root/usr/share/gocode/src/github.com/modern-go/reflect2" vendor/github.com/modern-go/reflect2
rm -f vendor/github.com/modern-go/reflect2/go.mod

mkdir -p .go/src/k8s.io
ln -sfn ../../.. .go/src/k8s.io/kubernetes
step "compiling kube-apiserver and kube-controller-manager (the long part: 5-10 minutes on 2 cores)"
GOPATH=$PWD/.go GOFLAGS=-mod=vendor CGO_ENABLED=0 GO111MODULE=off \
  make WHAT="cmd/kube-apiserver cmd/kube-controller-manager" >"$work/make.log" 2>&1 || {
  tail -n 30 "$work/make.log" >&2
  echo "error: the kube-apiserver build failed; full log in $work/make.log" >&2
  exit 1
}

step "installing into $dest"
mkdir -p "$dest"
install -m 0755 _output/bin/kube-apiserver _output/bin/kube-controller-manager "$dest/"
ln -sfn "$(command -v etcd)" "$dest/etcd"
echo "$version" > "$dest/VERSION"
built=1
step "done: $dest"
