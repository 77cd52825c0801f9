# Single-file builds (see scripts/dist.sh): dist/roost-x86_64.pyz and dist/roost-aarch64.pyz;
# Debian packages of them (scripts/deb.sh): dist/roost_VERSION_amd64.deb and dist/roost_VERSION_arm64.deb.
.PHONY: dist dist-x86_64 dist-aarch64 deb deb-arm64 deb-amd64 test

dist:
	bash scripts/dist.sh x86_64 aarch64

dist-x86_64:
	bash scripts/dist.sh x86_64

dist-aarch64:
	bash scripts/dist.sh aarch64

deb:
	bash scripts/deb.sh x86_64 aarch64

deb-arm64:
	bash scripts/deb.sh aarch64

deb-amd64:
	bash scripts/deb.sh x86_64

test:
	bash scripts/test.sh
