package xdptest

//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -cc clang-19 -strip llvm-strip-19 -tags linux -target bpfel -type drop_rule testprogs ../../../bpf/xdp_test.c -- -mcpu=v3 -fno-strict-aliasing -Wall -Werror -I../../../bpf/include
