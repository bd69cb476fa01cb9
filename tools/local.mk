# tools: rules added as the code arrives.
