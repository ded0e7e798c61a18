package xdp

//go:generate go run github.com/cilium/ebpf/cmd/bpf2go -cc clang-19 -strip llvm-strip-19 -tags linux -target bpfel -type stat -type flow_dir -type flow_state -type config_flag -type flow -type flow_key -type vip_key -type vip_meta -type real -type lb_config lb ../../bpf/xdp_lb.c -- -mcpu=v3 -fno-strict-aliasing -Wall -Werror -I../../bpf -I../../bpf/include
