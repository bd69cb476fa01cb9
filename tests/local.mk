# tests: rules added as the code arrives.
