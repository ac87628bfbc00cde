/*
 * The id map (see map.h). Entries are appended while a stream is read, then
 * frozen into an index sized for exactly that count, so the memory per entry
 * stays near 24 + 4 / 0.7 bytes instead of doubling with a growing hash table.
 */
#include "map.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "mem.h"

/*
 * A slot holds an entry number in its low 28 bits and 4 more bits of the
 * key's hash above them, so most probes that would land on another key are
 * rejected without touching that entry's cache line. All ones is never a
 * valid entry number (MAP_MAX_ENTRIES).
 */
#define SLOT_EMPTY    UINT32_MAX
#define SLOT_BITS     28
#define SLOT_INDEX(s) ((s) & (((uint32_t)1 << SLOT_BITS) - 1))
#define SLOT_TAG(h)   ((uint32_t)((h)&15) << SLOT_BITS)

/* An integer key itself, or the offset of an encoded key in the arena. */
struct entry {
    uint64_t k;
    unsigned char uuid[16];
};

struct map {
    int nkeys;
    char *kinds;
    int int_mode; /* one integer key column: the key is stored in the entry */
    int frozen;

    struct entry *ents;
    unsigned char *flags;
    size_t n;
    size_t cap;

    struct buf arena;   /* encoded keys, text mode */
    struct buf scratch; /* the probe key of map_find, text mode */

    uint32_t *slots;
    size_t nslots;

    size_t peak;
};

static size_t
current_bytes(const struct map *m)
{
    return m->cap * (sizeof(struct entry) + 1) + m->arena.cap + m->nslots * sizeof(uint32_t);
}

static void
note_peak(struct map *m)
{
    size_t b = current_bytes(m);

    if (b > m->peak)
        m->peak = b;
}

struct map *
map_new(int nkeys, const char *kinds)
{
    struct map *m = xcalloc(1, sizeof(*m));

    m->nkeys = nkeys;
    m->kinds = xstrndup(kinds, (size_t)nkeys);
    m->int_mode = nkeys == 1 && kinds[0] == RS_ORDER_INT;
    buf_init(&m->arena);
    buf_init(&m->scratch);
    return m;
}

void
map_free(struct map *m)
{
    if (m == NULL)
        return;
    free(m->kinds);
    free(m->ents);
    free(m->flags);
    buf_free(&m->arena);
    buf_free(&m->scratch);
    free(m->slots);
    free(m);
}

static uint64_t
mix64(uint64_t x)
{
    /* splitmix64's finaliser: serial ids spread over the whole table. */
    x = (x ^ (x >> 30)) * UINT64_C(0xbf58476d1ce4e5b9);
    x = (x ^ (x >> 27)) * UINT64_C(0x94d049bb133111eb);
    return x ^ (x >> 31);
}

/*
 * The text-mode encoding of a key: per column, an integer as 8 bytes, text as
 * a LEB128 length and its bytes. Unambiguous, so equal encodings are equal
 * keys. Returns 0, or -1 for a NULL or an integer that does not parse.
 */
static int
encode_key(const struct map *m, const struct rs_value *key, struct buf *out)
{
    buf_reset(out);
    for (int i = 0; i < m->nkeys; i++) {
        if (key[i].data == NULL)
            return -1;
        if (m->kinds[i] == RS_ORDER_INT) {
            int64_t v;
            uint64_t u;
            unsigned char b[8];

            if (rs_parse_int64(key[i].data, key[i].len, &v) != 0)
                return -1;
            u = (uint64_t)v;
            for (int j = 0; j < 8; j++)
                b[j] = (unsigned char)(u >> (8 * j));
            buf_append(out, b, sizeof(b));
        } else {
            size_t len = key[i].len;

            do {
                buf_putc(out, (char)((len & 0x7f) | (len > 0x7f ? 0x80 : 0)));
                len >>= 7;
            } while (len > 0);
            buf_append(out, key[i].data, key[i].len);
        }
    }
    return 0;
}

static void
key_bytes(const struct map *m, size_t i, const char **p, size_t *len)
{
    size_t end = i + 1 < m->n ? (size_t)m->ents[i + 1].k : m->arena.len;

    *p = m->arena.data + m->ents[i].k;
    *len = end - (size_t)m->ents[i].k;
}

static uint64_t
entry_hash(const struct map *m, size_t i)
{
    const char *p;
    size_t len;

    if (m->int_mode)
        return mix64(m->ents[i].k);
    key_bytes(m, i, &p, &len);
    return XXH3_64bits(p, len);
}

/* The home slot of hash h: a multiply-shift, so nslots need not be a power of two. */
static size_t
home_slot(const struct map *m, uint64_t h)
{
    return (size_t)(((h >> 32) * (uint64_t)m->nslots) >> 32);
}

int
map_add(struct map *m, const struct rs_value *key, const unsigned char *uuid, unsigned flags)
{
    struct entry *e;

    if (m->frozen)
        return MAP_EFROZEN;
    if (m->n >= MAP_MAX_ENTRIES)
        return MAP_EFULL;
    if (m->n == m->cap) {
        /* Grow by a quarter: the peak while loading stays close to the final size. */
        size_t cap = m->cap + m->cap / 4 + 64;

        if (cap > MAP_MAX_ENTRIES)
            cap = MAP_MAX_ENTRIES;
        m->ents = xrealloc(m->ents, cap * sizeof(*m->ents));
        m->flags = xrealloc(m->flags, cap);
        m->cap = cap;
        note_peak(m);
    }
    e = &m->ents[m->n];
    if (m->int_mode) {
        int64_t v;

        if (key[0].data == NULL || rs_parse_int64(key[0].data, key[0].len, &v) != 0)
            return MAP_EBADKEY;
        e->k = (uint64_t)v;
    } else {
        size_t cap_before = m->arena.cap;

        if (encode_key(m, key, &m->scratch) != 0)
            return MAP_EBADKEY;
        e->k = m->arena.len;
        buf_append(&m->arena, m->scratch.data, m->scratch.len);
        if (m->arena.cap != cap_before)
            note_peak(m);
    }
    memcpy(e->uuid, uuid, 16);
    m->flags[m->n] = (unsigned char)flags;
    m->n++;
    return 0;
}

static int
entries_equal(const struct map *m, size_t a, size_t b)
{
    const char *pa, *pb;
    size_t la, lb;

    if (m->int_mode)
        return m->ents[a].k == m->ents[b].k;
    key_bytes(m, a, &pa, &la);
    key_bytes(m, b, &pb, &lb);
    return la == lb && memcmp(pa, pb, la) == 0;
}

int
map_freeze(struct map *m, size_t *dup)
{
    if (m->frozen)
        return 0;
    m->frozen = 1;
    /* Give back the growth slack before the index is allocated. */
    if (m->n > 0 && m->n < m->cap) {
        m->ents = xrealloc(m->ents, m->n * sizeof(*m->ents));
        m->flags = xrealloc(m->flags, m->n);
        m->cap = m->n;
    }
    if (m->arena.len + 1 < m->arena.cap) {
        m->arena.data = xrealloc(m->arena.data, m->arena.len + 1);
        m->arena.cap = m->arena.len + 1;
    }
    if (m->n == 0)
        return 0;
    /* Load factor 0.7 at most; at least one slot always stays empty. */
    m->nslots = m->n + (m->n * 3) / 7 + 1;
    m->slots = xmalloc(m->nslots * sizeof(uint32_t));
    memset(m->slots, 0xff, m->nslots * sizeof(uint32_t));
    note_peak(m);
    for (size_t i = 0; i < m->n; i++) {
        uint64_t h = entry_hash(m, i);
        uint32_t tag = SLOT_TAG(h);
        size_t s = home_slot(m, h);

        while (m->slots[s] != SLOT_EMPTY) {
            if ((m->slots[s] & ~SLOT_INDEX(m->slots[s])) == tag &&
                entries_equal(m, SLOT_INDEX(m->slots[s]), i)) {
                *dup = i;
                return MAP_EDUP;
            }
            if (++s == m->nslots)
                s = 0;
        }
        m->slots[s] = tag | (uint32_t)i;
    }
    return 0;
}

size_t
map_find(struct map *m, const struct rs_value *key)
{
    uint64_t h, want = 0;
    uint32_t tag;
    size_t s;

    if (m->n == 0 || !m->frozen)
        return MAP_NONE;
    if (m->int_mode) {
        int64_t v;

        if (key[0].data == NULL || rs_parse_int64(key[0].data, key[0].len, &v) != 0)
            return MAP_NONE;
        want = (uint64_t)v;
        h = mix64(want);
    } else {
        if (encode_key(m, key, &m->scratch) != 0)
            return MAP_NONE;
        h = XXH3_64bits(m->scratch.data, m->scratch.len);
    }
    tag = SLOT_TAG(h);
    for (s = home_slot(m, h); m->slots[s] != SLOT_EMPTY; s = s + 1 == m->nslots ? 0 : s + 1) {
        size_t i = SLOT_INDEX(m->slots[s]);

        if ((m->slots[s] & ~SLOT_INDEX(m->slots[s])) != tag)
            continue;

        if (m->int_mode) {
            if (m->ents[i].k == want)
                return i;
        } else {
            const char *p;
            size_t len;

            key_bytes(m, i, &p, &len);
            if (len == m->scratch.len && memcmp(p, m->scratch.data, len) == 0)
                return i;
        }
    }
    return MAP_NONE;
}

size_t
map_find_hint(struct map *m, const struct rs_value *key, size_t hint)
{
    if (m->frozen && hint < m->n) {
        if (m->int_mode) {
            int64_t v;

            if (key[0].data != NULL && rs_parse_int64(key[0].data, key[0].len, &v) == 0 &&
                m->ents[hint].k == (uint64_t)v)
                return hint;
        } else if (encode_key(m, key, &m->scratch) == 0) {
            const char *p;
            size_t len;

            key_bytes(m, hint, &p, &len);
            if (len == m->scratch.len && memcmp(p, m->scratch.data, len) == 0)
                return hint;
        }
    }
    return map_find(m, key);
}

size_t
map_count(const struct map *m)
{
    return m->n;
}

const unsigned char *
map_uuid(const struct map *m, size_t i)
{
    return m->ents[i].uuid;
}

unsigned
map_flags(const struct map *m, size_t i)
{
    return m->flags[i];
}

void
map_set_flags(struct map *m, size_t i, unsigned flags)
{
    m->flags[i] |= (unsigned char)flags;
}

size_t
map_peak_bytes(const struct map *m)
{
    return m->peak;
}

static void
put_escaped(struct buf *b, const char *p, size_t len)
{
    for (size_t k = 0; k < len && k < 200; k++) {
        unsigned char ch = (unsigned char)p[k];

        if (ch < 0x20 || ch == 0x7f)
            buf_printf(b, "\\x%02x", ch);
        else
            buf_putc(b, (char)ch);
    }
    if (len > 200)
        buf_puts(b, "...");
}

void
map_key_format(const struct map *m, size_t i, char *out, size_t outsz)
{
    struct buf b;
    const unsigned char *p, *end;
    const char *kp;
    size_t klen;

    buf_init(&b);
    if (m->int_mode) {
        buf_printf(&b, "%lld", (long long)(int64_t)m->ents[i].k);
        goto done;
    }
    key_bytes(m, i, &kp, &klen);
    p = (const unsigned char *)kp;
    end = p + klen;
    for (int c = 0; c < m->nkeys && p < end; c++) {
        if (c > 0)
            buf_puts(&b, ", ");
        if (m->kinds[c] == RS_ORDER_INT) {
            uint64_t u = 0;

            for (int j = 0; j < 8 && p < end; j++)
                u |= (uint64_t)*p++ << (8 * j);
            buf_printf(&b, "%lld", (long long)(int64_t)u);
        } else {
            size_t len = 0;
            int shift = 0;

            while (p < end) {
                unsigned char ch = *p++;

                len |= (size_t)(ch & 0x7f) << shift;
                shift += 7;
                if ((ch & 0x80) == 0)
                    break;
            }
            if (len > (size_t)(end - p))
                len = (size_t)(end - p);
            put_escaped(&b, (const char *)p, len);
            p += len;
        }
    }
done:
    snprintf(out, outsz, "%s", b.data);
    buf_free(&b);
}

static int
hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int
map_uuid_parse(const char *s, size_t len, unsigned char *out)
{
    int n = 0;

    if (s == NULL || len != 36)
        return -1;
    for (size_t i = 0; i < 36;) {
        int hi, lo;

        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-')
                return -1;
            i++;
            continue;
        }
        hi = hex_digit(s[i]);
        lo = hex_digit(s[i + 1]);
        if (hi < 0 || lo < 0)
            return -1;
        out[n++] = (unsigned char)(hi << 4 | lo);
        i += 2;
    }
    return 0;
}

void
map_uuid_format(const unsigned char *uuid, char *out)
{
    static const char hex[] = "0123456789abcdef";
    char *p = out;

    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            *p++ = '-';
        *p++ = hex[uuid[i] >> 4];
        *p++ = hex[uuid[i] & 15];
    }
    *p = '\0';
}
