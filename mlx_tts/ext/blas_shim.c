/* Exports the three CBLAS entry points that libmlx calls under their standard names, forwarding them to
   scipy-openblas32, whose symbols carry a `scipy_` prefix. Loaded into the global symbol scope before
   mlx.core, it makes libmlx's GEMMs run on OpenBLAS instead of the reference BLAS in the mlx-cpu wheel.
   OpenBLAS's thread-count functions are exported under their standard names too, for mlx_tts's kernels. */

void scipy_cblas_sgemm(int, int, int, int, int, int, float, const float *, int, const float *, int, float,
                       float *, int);
void scipy_cblas_dgemm(int, int, int, int, int, int, double, const double *, int, const double *, int, double,
                       double *, int);
void scipy_cblas_cgemm(int, int, int, int, int, int, const void *, const void *, int, const void *, int,
                       const void *, void *, int);

int scipy_openblas_get_num_threads(void);
void scipy_openblas_set_num_threads(int);

int openblas_get_num_threads(void) { return scipy_openblas_get_num_threads(); }

void openblas_set_num_threads(int threads) { scipy_openblas_set_num_threads(threads); }

void cblas_sgemm(int order, int ta, int tb, int m, int n, int k, float alpha, const float *a, int lda,
                 const float *b, int ldb, float beta, float *c, int ldc) {
    scipy_cblas_sgemm(order, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void cblas_dgemm(int order, int ta, int tb, int m, int n, int k, double alpha, const double *a, int lda,
                 const double *b, int ldb, double beta, double *c, int ldc) {
    scipy_cblas_dgemm(order, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

void cblas_cgemm(int order, int ta, int tb, int m, int n, int k, const void *alpha, const void *a, int lda,
                 const void *b, int ldb, const void *beta, void *c, int ldc) {
    scipy_cblas_cgemm(order, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
