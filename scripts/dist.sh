#!/usr/bin/env bash
# Builds Roost as single executable files, one per architecture: dist/roost-x86_64.pyz, dist/roost-aarch64.pyz.
#
#     bash scripts/dist.sh                 # both architectures
#     bash scripts/dist.sh x86_64          # one
#
# Each file is a zipapp made with shiv: Roost and every dependency, with the compiled ones (uvloop, cffi,
# cryptography) as manylinux wheels for that architecture and for CPython 3.11, 3.12 and 3.13 side by side
# (their extension modules carry the Python version in their file names), so the file runs on any Linux
# machine of that architecture with CPython 3.11+ and glibc 2.28+ (Debian 10+, Raspberry Pi OS bookworm):
# `./roost-aarch64.pyz serve`. No pip, no compiler, no network on that machine. On its first run shiv
# unpacks it to ~/.shiv (or $SHIV_ROOT) and reuses that afterwards.
#
# Wheels are downloaded once into build/wheelhouse (gitignored) and reused offline afterwards.
# Environment: PYTHON (the interpreter that runs pip and shiv; default .venv/bin/python),
# ROOST_PY_VERSIONS (default "3.11 3.12 3.13").
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-.venv/bin/python}
versions=${ROOST_PY_VERSIONS:-3.11 3.12 3.13}
arches=("$@")
[ "${#arches[@]}" -gt 0 ] || arches=(x86_64 aarch64)
glibc=2_28  # manylinux_2_28 and older (manylinux2014 = 2_17) wheels are accepted

wheelhouse=build/wheelhouse
work=build/dist
mkdir -p "$wheelhouse" "$work" dist
pip=("$python" -m pip --disable-pip-version-check -q)

if ! "$python" -c "import shiv" 2>/dev/null; then
    "${pip[@]}" install 'shiv>=1.0'
fi

# Roost's own wheel (pure Python), built fresh from the work tree.
rm -rf "$work/roost-wheel"
isolation=()
"$python" -c "import setuptools.command.bdist_wheel" 2>/dev/null && isolation=(--no-build-isolation)  # quicker
"${pip[@]}" wheel --no-deps "${isolation[@]}" --wheel-dir "$work/roost-wheel" .
roost_wheel=$(ls "$work"/roost-wheel/roost-*.whl)

# The same versions of every dependency for every Python and architecture: resolved once, here.
constraints="$work/constraints.txt"
rm -f "$constraints"

for arch in "${arches[@]}"; do
    case "$arch" in x86_64|aarch64) ;; *) echo "unknown architecture: $arch (x86_64 or aarch64)" >&2; exit 2 ;; esac
    site="$work/site-$arch"
    rm -rf "$site"
    mkdir -p "$site"
    for version in $versions; do
        target="$work/site-$arch-$version"
        rm -rf "$target"
        platform=(--only-binary=:all: --implementation cp --python-version "$version"
                  --platform "manylinux_${glibc}_${arch}" --platform "manylinux2014_${arch}")
        with_constraints=()
        [ -s "$constraints" ] && with_constraints=(--constraint "$constraints")
        rm -f "$wheelhouse"/roost-*.whl  # Roost itself always comes from the fresh wheel
        install=("${pip[@]}" install --no-index --find-links "$wheelhouse" --target "$target" --no-compile
                 "${platform[@]}" "${with_constraints[@]}" "$roost_wheel")
        # Offline from the wheelhouse when it has everything; else download into it first.
        if ! "${install[@]}" >/dev/null 2>&1; then
            rm -rf "$target"
            "${pip[@]}" download --find-links "$wheelhouse" --dest "$wheelhouse" "${platform[@]}" \
                "${with_constraints[@]}" "$roost_wheel"
            rm -f "$wheelhouse"/roost-*.whl
            "${install[@]}"
        fi
        if [ ! -s "$constraints" ]; then
            # name==version of everything the first resolution chose (Roost itself excepted).
            for info in "$target"/*.dist-info; do
                name=$(sed -n 's/^Name: //p' "$info/METADATA" | head -1)
                ver=$(sed -n 's/^Version: //p' "$info/METADATA" | head -1)
                [ "$name" = roost ] || echo "$name==$ver"
            done | sort > "$constraints"
        fi
        # Union: pure-Python files are identical across versions; extension modules differ by file name.
        cp -a -n "$target"/. "$site"/
        rm -rf "$target"
    done
    rm -rf "$site/bin"
    out="dist/roost-$arch.pyz"
    "$python" -m shiv --site-packages "$site" --entry-point control.cli:main --output-file "$out" \
        --python '/usr/bin/env python3' --compressed --reproducible
    chmod +x "$out"
    echo "$out: $(du -h "$out" | cut -f1)"
done
