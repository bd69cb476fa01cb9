/* Shared by the CUnit runners: run suites in basic mode and return the
 * number of failed assertions, so `make check` fails when any assertion
 * does (CU_get_error() only reports framework errors). */
#ifndef SPD_CUTEST_H
#define SPD_CUTEST_H

#include <stdio.h>

#include <CUnit/Basic.h>
#include <CUnit/CUnit.h>

static inline int cutest_run(CU_SuiteInfo *suites)
{
    if (CU_initialize_registry() != CUE_SUCCESS) {
        fprintf(stderr, "CUnit: %s\n", CU_get_error_msg());
        return 2;
    }
    if (CU_register_suites(suites) != CUE_SUCCESS) {
        fprintf(stderr, "CUnit: %s\n", CU_get_error_msg());
        CU_cleanup_registry();
        return 2;
    }
    CU_basic_set_mode(CU_BRM_VERBOSE);
    CU_basic_run_tests();
    unsigned failed = CU_get_number_of_failures();
    unsigned failed_tests = CU_get_number_of_tests_failed();
    unsigned ran = CU_get_number_of_tests_run();
    int framework = CU_get_error();
    CU_cleanup_registry();
    if (ran == 0) {
        fprintf(stderr, "CUnit: no test ran\n");
        return 2;
    }
    return (failed || failed_tests || framework) ? 1 : 0;
}

#endif /* SPD_CUTEST_H */
