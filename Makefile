# Single-file builds (see scripts/dist.sh): dist/roost-x86_64.pyz and dist/roost-aarch64.pyz.
.PHONY: dist dist-x86_64 dist-aarch64 test

dist:
	bash scripts/dist.sh x86_64 aarch64

dist-x86_64:
	bash scripts/dist.sh x86_64

dist-aarch64:
	bash scripts/dist.sh aarch64

test:
	bash scripts/test.sh
