#!/usr/bin/env bash
# Fills DIR with what the nested case pod-net needs in L1 beyond the default L1 image:
# kestrel-podnet (with its shared libraries) at /nested/bin, and the modules for CNI's bridge
# and veth and for tc's ingress qdisc, u32 filter and mirred action at /nested/podnet-modules.
#
# usage: cni-shim/net/podnet-l1-extra.sh DIR [BUILD_DIR]
#   then: tools/nested/run-tests --cases pod-net --l1-extra DIR
set -euo pipefail
source "$(dirname "$0")/../../tools/nested/lib.sh"
[[ $# -ge 1 ]] || nested_die "usage: podnet-l1-extra.sh DIR [BUILD_DIR]"
dir=$1 build=${2:-$nested_root/build}
podnet=$build/cni-shim/net/kestrel-podnet
[[ -x $podnet ]] || nested_die "no $podnet: build it first (ninja -C $build)"
nested_need_kernel
mkdir -p "$dir/nested/bin" "$dir/nested/podnet-modules"
cp "$podnet" "$dir/nested/bin/"
nested_add_libraries "$dir" "$podnet"
m=$nested_kernel/modules/kernel
for ko in net/llc/llc.ko net/802/stp.ko net/bridge/bridge.ko drivers/net/veth.ko net/sched/sch_ingress.ko \
          net/sched/cls_u32.ko net/sched/act_mirred.ko; do
  cp "$m/$ko" "$dir/nested/podnet-modules/"
done
echo "podnet-l1-extra: $dir ready"
