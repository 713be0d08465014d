/* Included into RocksDB's C++ for 32-bit ARM by packaging/build.sh.
 * librocksdb-sys defines HAVE_UINT128_EXTENSION for every non-MSVC target,
 * but 32-bit targets have no __uint128_t; RocksDB has a portable path for
 * them. -include is processed after the command line's -D options. */
#undef HAVE_UINT128_EXTENSION
