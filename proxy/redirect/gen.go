package redirect

//go:generate go tool bpf2go -cc clang-19 -strip llvm-strip-19 -target amd64 -type addr redirect bpf/redirect.c -- -I/usr/include/x86_64-linux-gnu -O2 -g -Wall
