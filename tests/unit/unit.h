/*
 * A minimal unit-test runner: TEST(name) defines and registers a test,
 * CHECK(cond) records file:line on failure and carries on. The last line
 * printed is "N passed, N failed"; the exit status is non-zero on any failure.
 */
#ifndef DRIFTLESS_UNIT_H
#define DRIFTLESS_UNIT_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct unit_test {
    const char *name;
    void (*fn)(void);
};

#define UNIT_MAX 256
static struct unit_test unit_tests[UNIT_MAX];
static int unit_ntests;
static int unit_failed_checks;

#define TEST(name)                                                                                 \
    static void test_##name(void);                                                                 \
    __attribute__((constructor)) static void register_##name(void)                                 \
    {                                                                                              \
        if (unit_ntests < UNIT_MAX)                                                                \
            unit_tests[unit_ntests++] = (struct unit_test){ #name, test_##name };                  \
    }                                                                                              \
    static void test_##name(void)

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            unit_failed_checks++;                                                                  \
            fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond);               \
        }                                                                                          \
    } while (0)

static int unit_main(void) __attribute__((unused));
static int
unit_main(void)
{
    int passed = 0, failed = 0;

    for (int i = 0; i < unit_ntests; i++) {
        int before = unit_failed_checks;

        unit_tests[i].fn();
        if (unit_failed_checks == before) {
            passed++;
            printf("ok %s\n", unit_tests[i].name);
        } else {
            failed++;
            printf("FAIL %s\n", unit_tests[i].name);
        }
        fflush(stdout);
    }
    printf("%d passed, %d failed\n", passed, failed);
    return failed ? 1 : 0;
}

#define UNIT_MAIN                                                                                  \
    int main(void)                                                                                 \
    {                                                                                              \
        return unit_main();                                                                        \
    }

#endif
