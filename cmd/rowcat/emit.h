/*
 * Stream to text: COPY CSV, COPY text, the header listing and the count.
 * Each returns 0 or an exit code after printing (the reader's, or EXIT_IO
 * from the output).
 */
#ifndef ROWCAT_EMIT_H
#define ROWCAT_EMIT_H

#include "out.h"
#include "rs.h"

enum emit_format { EMIT_CSV, EMIT_TSV };

/* Every record as COPY ... TO STDOUT writes it; header_row adds the names first. */
int emit_rows(struct rs_reader *r, struct out *o, enum emit_format f, int header_row);
/* The header as "item<TAB>value..." lines (rowcat(1), "HEADER OUTPUT"). */
void emit_header(const struct rs_header *h, struct out *o);
/* Read to the verified trailer and print the record count. */
int emit_count(struct rs_reader *r, struct out *o);

/* Append s as a COPY text field (backslash escapes). */
void emit_text_value(struct out *o, const char *s, size_t len);

#endif
