/*
 * idmap's in-memory id map: legacy key -> 16-byte UUID, built once from a
 * stream and then only looked up. Entries sit in one array of 24 bytes each
 * (an integer key, or the offset of an encoded key in a byte arena), indexed
 * by an open-addressing table of 32-bit slots (an entry number and 4 bits of
 * its hash) at load factor 0.7: about 31 bytes per entry for a single
 * integer key, no per-entry malloc.
 */
#ifndef IDMAP_MAP_H
#define IDMAP_MAP_H

#include <stddef.h>
#include <stdint.h>

#include "rs.h"

/* map_find's "not there". */
#define MAP_NONE SIZE_MAX
/* Most entries one map holds (an index slot keeps 28 bits of entry number). */
#define MAP_MAX_ENTRIES (((size_t)1 << 28) - 1)

/* Per-entry flags, for the caller's bookkeeping. */
#define MAP_NEW  1u /* the UUID was issued by this run */
#define MAP_REF  2u /* a row refers to this entry */
#define MAP_DONE 4u /* the entry's own row was written */

/* map_add and map_freeze results (0 is success). */
enum { MAP_EBADKEY = 1, MAP_EFULL, MAP_EDUP, MAP_EFROZEN };

struct map;

/*
 * A new empty map whose keys have nkeys columns of the given order kinds
 * (RS_ORDER_INT or RS_ORDER_TEXT, one char each). Integer kinds compare as
 * int64, so "007" and "7" are the same key, as in the stream's order.
 */
struct map *map_new(int nkeys, const char *kinds);
void map_free(struct map *m);

/*
 * Append an entry: key is nkeys non-NULL values, uuid 16 bytes. Returns 0,
 * MAP_EBADKEY for an integer key that does not parse, MAP_EFULL past
 * MAP_MAX_ENTRIES, MAP_EFROZEN after map_freeze. Prints nothing.
 */
int map_add(struct map *m, const struct rs_value *key, const unsigned char *uuid, unsigned flags);

/*
 * Build the lookup index; afterwards the map takes no more entries. Returns
 * 0, or MAP_EDUP with *dup set to the later of two entries with equal keys.
 */
int map_freeze(struct map *m, size_t *dup);

/* The entry of key (nkeys values), or MAP_NONE. A NULL or bad value is absent. */
size_t map_find(struct map *m, const struct rs_value *key);
/*
 * As map_find, trying entry hint first: a caller that reads keys in the order
 * they were added passes the previous result + 1 and skips the index.
 */
size_t map_find_hint(struct map *m, const struct rs_value *key, size_t hint);

size_t map_count(const struct map *m);
const unsigned char *map_uuid(const struct map *m, size_t i);
unsigned map_flags(const struct map *m, size_t i);
void map_set_flags(struct map *m, size_t i, unsigned flags); /* ORed in */

/* The most bytes the map has held allocated at once (entries, keys, index). */
size_t map_peak_bytes(const struct map *m);

/* Entry i's key as "5" or "a, 7" (control bytes escaped) into out. */
void map_key_format(const struct map *m, size_t i, char *out, size_t outsz);

/* Parse a UUID's 36-character text form (either case); returns 0 or -1. */
int map_uuid_parse(const char *s, size_t len, unsigned char *out);
/* Format 16 bytes as 36 lowercase characters and a NUL. */
void map_uuid_format(const unsigned char *uuid, char *out);

#endif
