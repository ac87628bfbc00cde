/*
 * rowcat --table: an aligned table for people, in the layout of psql's
 * aligned format. Column widths come from the header and the first
 * TABLE_WINDOW records, so memory stays bounded; a later, wider value pushes
 * its row out of line instead of being hidden.
 */
#ifndef ROWCAT_TABLE_H
#define ROWCAT_TABLE_H

#include "out.h"
#include "rs.h"

#define TABLE_WINDOW 1000

/*
 * Print every record of r. null_str shows NULL; width > 0 cuts longer values
 * to width columns (ending in "..."). Returns 0 or an exit code after printing.
 */
int table_print(struct rs_reader *r, struct out *o, const char *null_str, int width);

/* Call once before table_print: display widths of non-ASCII text need a UTF-8 locale. */
void table_init_locale(void);

#endif
