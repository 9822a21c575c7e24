#!/usr/bin/env bash
# The leasefs demo: format a pool in a temporary file, mount it, use it as an
# ordinary filesystem, unmount, remount, verify every byte, break a layout
# lease, map a file straight from the pool (DAX), and fsck it.
# Usage: tools/demo.sh [BUILD_DIR]    (./dev demo runs it after building)
set -euo pipefail

build=$(realpath "${1:-build}")
leasefs="$build/fusefs/daemon/leasefs"
mkfs="$build/tools/mkfs.leasefs"
fsck="$build/tools/fsck.leasefs"
leasectl="$build/tools/leasectl"
run="$build/tools/run/leasefs-run"

pool=$(mktemp /dev/shm/leasefs-demo-XXXXXX)
mnt=$(mktemp -d /tmp/leasefs-demo-mnt-XXXXXX)
sums=$(mktemp /tmp/leasefs-demo-sums-XXXXXX)
pid=""

step() { printf '\n\033[1m--- %s\033[0m\n' "$*"; }

cleanup() {
  if grep -q " $mnt " /proc/mounts; then fusermount3 -u "$mnt" 2>/dev/null || fusermount3 -u -z "$mnt"; fi
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    wait "$pid" 2>/dev/null || true
  fi
  rm -f "$pool" "$sums"
  rmdir "$mnt" 2>/dev/null || true
}
trap cleanup EXIT

mount_pool() {
  "$leasefs" "$pool" "$mnt" -f -o allow_other,lease_break_time=5 &
  pid=$!
  for _ in $(seq 200); do
    if grep -q " $mnt fuse.leasefs " /proc/mounts && stat "$mnt" >/dev/null 2>&1; then return 0; fi
    kill -0 "$pid" 2>/dev/null || { echo "leasefs exited before mounting"; exit 1; }
    sleep 0.05
  done
  echo "leasefs did not mount within 10 s"; exit 1
}

unmount_pool() {
  fusermount3 -u "$mnt"
  wait "$pid"
  pid=""
}

step "format a 256 MiB pool in $pool"
"$mkfs" --force --size 256M --label demo "$pool"

step "mount it on $mnt"
mount_pool
grep " $mnt " /proc/mounts

step "use it like any filesystem"
cd "$mnt"
mkdir -p src/include docs
cp -r /usr/include/fuse3 src/include/
dd if=/dev/urandom of=docs/random.bin bs=1M count=16 status=none
printf 'hello from leasefs\n' > docs/hello.txt
ln docs/hello.txt docs/hello-hardlink.txt
ln -s ../docs/hello.txt src/hello-symlink
truncate -s 5G sparse.img                       # a sparse file past 4 GiB
printf 'far away' | dd of=sparse.img bs=1 seek=$((4*1024*1024*1024 + 7)) conv=notrunc status=none
python3 -c "import os; os.setxattr('docs/hello.txt', 'user.origin', b'demo')"
mv docs/hello.txt docs/greeting.txt
ls -la "$mnt" "$mnt/docs"
stat -c '%n: %s bytes, %b blocks of %B, %h links' sparse.img docs/greeting.txt
python3 -c "import os; print('xattr user.origin =', os.getxattr('docs/greeting.txt', 'user.origin'))"
df -h "$mnt"
find . -type f -print0 | sort -z | xargs -0 sha256sum > "$sums"
echo "$(wc -l < "$sums") files checksummed"
cd /

step "unmount, mount again, and verify every byte"
unmount_pool
mount_pool
(cd "$mnt" && sha256sum --quiet -c "$sums") && echo "all files intact"
readlink "$mnt/src/hello-symlink"

step "hold a layout lease, and watch another process break it"
"$leasectl" hold --range 0:4M "$mnt/docs/random.bin" &
holder=$!
sleep 0.5
echo "punching a hole in the leased range (waits for the holder to let go):"
start=$(date +%s%N)
fallocate --punch-hole --offset 0 --length 1M "$mnt/docs/random.bin"
echo "the punch went ahead after $(( ($(date +%s%N) - start) / 1000000 )) ms"
wait "$holder"
"$leasectl" events "$mnt"

step "map a file straight from the pool (DAX) with an unmodified program"
# Python's mmap under leasefs-run: its mapping is the pool's pages (see the
# pool's path in /proc/self/maps), its stores reach read() at once, with no
# daemon on the path; leasectl dax lists the mapping while it lives.
"$run" python3 - "$mnt/docs/dax.bin" "$pool" "$leasectl" "$mnt" <<'PY'
import mmap, os, subprocess, sys
path, pool, leasectl, mnt = sys.argv[1:]
with open(path, "wb") as f:
    f.truncate(1 << 20)
with open(path, "r+b") as f:
    m = mmap.mmap(f.fileno(), 1 << 20)
    m[4096:4096 + 15] = b"stored directly"
    maps = open("/proc/self/maps").read()
    print("mapped from the pool:", any(pool in line for line in maps.splitlines()))
    with open(path, "rb") as g:
        g.seek(4096)
        print("read() sees:", g.read(15).decode())
    subprocess.run([leasectl, "dax", mnt], check=True)
    m.close()
PY
"$leasectl" dax "$mnt"
unmount_pool

step "check the pool offline"
"$fsck" -v "$pool"

step "demo finished"
