#!/usr/bin/env bash
# Build opd's local control plane (etcd + kube-apiserver + kube-controller-manager)
# from Debian packages, into a cache folder. Needs root for apt-get.
# Usage: build-control-plane.sh DEST
# Prints one line per step ("==> ..."), so callers can show progress.
set -euo pipefail

dest=${1:?usage: build-control-plane.sh DEST}
version=1.20.2
work=${OPD_BUILD_DIR:-$(mktemp -d -t opd-k8s-build.XXXXXX)}
step() { printf '==> %s\n' "$*"; }

if [ "$(id -u)" != 0 ]; then
  echo "error: building the control plane needs root (apt-get); run as root or set OPD_CONTROL_PLANE_ASSETS" >&2
  exit 2
fi
if ! command -v apt-get >/dev/null; then
  echo "error: no apt-get: the control plane build needs Debian; set OPD_CONTROL_PLANE_ASSETS to a folder with etcd and kube-apiserver" >&2
  exit 2
fi

major=$(cut -d. -f1 /etc/debian_version 2>/dev/null || echo 12)
export DEBIAN_FRONTEND=noninteractive

# Kubernetes 1.20 is only packaged (as source) in bookworm; its build needs Go <= 1.19.
step "adding Debian bookworm source entries"
cat > /etc/apt/sources.list.d/opd-bookworm.sources <<SRC
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
if [ "$major" -ge 13 ]; then
  cat >> /etc/apt/sources.list.d/opd-bookworm.sources <<SRC

Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
  go_pkg=golang-1.19-go
  goroot=/usr/lib/go-1.19
else
  go_pkg=golang-go
  goroot=
fi

step "apt-get update"
apt-get update -qq
step "installing $go_pkg etcd-server rsync golang-github-modern-go-reflect2-dev make"
apt-get install -y -qq --no-install-recommends "$go_pkg" etcd-server rsync \
  golang-github-modern-go-reflect2-dev make openssl ca-certificates >/dev/null
if [ -n "$goroot" ]; then export PATH="$goroot/bin:$PATH"; fi
step "go: $(go version)"

step "downloading the kubernetes source package (bookworm)"
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
cp -r /usr/share/gocode/src/github.com/modern-go/reflect2 vendor/github.com/modern-go/reflect2
rm -f vendor/github.com/modern-go/reflect2/go.mod

mkdir -p .go/src/k8s.io
ln -sfn ../../.. .go/src/k8s.io/kubernetes
step "compiling kube-apiserver and kube-controller-manager (several minutes)"
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
cd /
[ -n "${OPD_BUILD_DIR:-}" ] || rm -rf "$work"
step "done: $dest"
