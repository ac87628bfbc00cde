/*
 * Row hashes: XXH3-128 over an unambiguous encoding of a list of columns, so
 * that rowhash, rowdiff and pgverify agree byte for byte (DESIGN.md "Hashes").
 * The encoding: the column count as 4 bytes little-endian, then per column a
 * flag byte (1 = NULL, 0 = value) and, for a value, its length as 8 bytes
 * little-endian followed by its bytes.
 */
#ifndef DRIFTLESS_HASH_H
#define DRIFTLESS_HASH_H

#include "rs.h"

/* Length of a row hash in hex digits (the NUL is extra). */
#define HASH_HEX_LEN 32
/* The type name rowhash gives the hash column. */
#define HASH_TYPE "xxh3_128"
/* The name rowhash gives the hash column. */
#define HASH_COLUMN "_hash"

/*
 * Hash the columns cols[0..ncols) of the record vals into out: 32 lowercase
 * hex digits, the high 64 bits first, NUL-terminated. Allocates nothing and
 * never fails.
 */
void hash_row(const struct rs_value *vals, const int *cols, int ncols, char out[33]);

#endif
