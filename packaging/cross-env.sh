# Sourced by build.sh and insn-count/count.sh: the environment a cross
# build of TARGET needs with Debian's cross toolchain PREFIX (for example
# aarch64-linux-gnu), with TARGET_DIR the cargo target directory.
#
#   . packaging/cross-env.sh; cross_env TARGET PREFIX TARGET_DIR
cross_env() {
  local target="$1" prefix="$2" target_dir="$3" var low fix
  var=$(echo "$target" | tr 'a-z-' 'A-Z_')
  low=$(echo "$target" | tr '-' '_')
  export "CARGO_TARGET_${var}_LINKER=${prefix}-gcc"
  export "CC_${low}=${prefix}-gcc" "CXX_${low}=${prefix}-g++" "AR_${low}=${prefix}-ar"
  if [ "$target" = armv7-unknown-linux-gnueabihf ]; then
    # librocksdb-sys assumes __uint128_t, which 32-bit ARM lacks.
    # A fixed path (the flag is part of the build's fingerprint): the header
    # is copied into the target directory, the same for every checkout.
    mkdir -p "$target_dir"
    fix="$(realpath "$target_dir")/armv7-no-uint128.h"
    cmp -s packaging/armv7-no-uint128.h "$fix" || cp packaging/armv7-no-uint128.h "$fix"
    export "CXXFLAGS_${low}=-include $fix"
  fi
  # bindgen (RocksDB's bindings) must parse the target's headers.
  export "BINDGEN_EXTRA_CLANG_ARGS_${low}=--sysroot=/usr/${prefix} --target=${target/armv7/armv7a}"
}
