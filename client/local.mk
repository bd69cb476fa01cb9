# client: rules added as the code arrives.
