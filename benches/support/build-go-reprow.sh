#!/bin/sh
# Builds the Go reprow (github.com/maedama/reprow, 2015) for `cargo bench --bench workers`, which
# uses it as a third column when $REPROW_BENCH_CACHE/reprow-go exists.
#
#   benches/support/build-go-reprow.sh SRC
#
# SRC holds four checkouts (this script downloads nothing but Debian packages):
#   SRC/reprow    github.com/maedama/reprow, master (325dbca)
#   SRC/seelog    github.com/cihub/seelog, master
#   SRC/tail      github.com/ActiveState/tail at 166cd27 (2014-12, the one reprow was built
#                 with; today's tail seeks the file it follows and gives up on a FIFO)
#   SRC/fsnotify  github.com/howeyc/fsnotify, master (what that tail imports)
# The rest comes from Debian's golang-* packages. The binary is reprow's cmd/reprow with the
# FIFO queue and the http_proxy runner (SQS and Q4M left out: they need the AWS SDK and a MySQL
# driver, and the benchmark uses neither), plus one shim: today's govalidator lacks the
# "string" validator reprow's config structs name, so it is registered as "any string".
set -eu
SRC=$(cd "${1:?usage: $0 SRC}" && pwd)
OUT=${REPROW_BENCH_CACHE:-/tmp/reprow-bench-workers}
G=$OUT/gopath
command -v go >/dev/null || apt-get install -y -q golang-go
apt-get install -y -q golang-github-parnurzeal-gorequest-dev golang-github-asaskevich-govalidator-dev \
  golang-github-mitchellh-mapstructure-dev golang-github-jessevdk-go-flags-dev golang-gopkg-yaml.v2-dev \
  golang-gopkg-tomb.v1-dev
rm -rf "$G"
mkdir -p "$G/src/github.com/maedama" "$G/src/github.com/cihub" "$G/src/github.com/ActiveState" \
  "$G/src/github.com/howeyc" "$G/src/reprowfifo"
cp -r "$SRC/reprow" "$G/src/github.com/maedama/reprow"
cp -r "$SRC/seelog" "$G/src/github.com/cihub/seelog"
cp -r "$SRC/tail" "$G/src/github.com/ActiveState/tail"
cp -r "$SRC/fsnotify" "$G/src/github.com/howeyc/fsnotify"
rm -rf "$G"/src/github.com/*/*/.git
sed -e '/reprow\/q4m"/d' -e '/reprow\/sqs"/d' "$SRC/reprow/cmd/reprow/reprow.go" >"$G/src/reprowfifo/main.go"
cat >"$G/src/reprowfifo/shim.go" <<'EOF'
package main

import "github.com/asaskevich/govalidator"

func init() {
	govalidator.TagMap["string"] = govalidator.Validator(func(string) bool { return true })
}
EOF
cd "$G/src/reprowfifo"
GO111MODULE=off GOPATH="$G:/usr/share/gocode" go build -o "$OUT/reprow-go" .
echo "built $OUT/reprow-go"
