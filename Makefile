# gen.go files pin the compiler (clang-19, llvm-strip-19) and its flags.
# CI runs `make generate` and fails when the committed output changes.

.PHONY: generate
generate:
	go generate ./l4/xdp/...
