"""churnflow: customer-churn prediction trained by a Kubeflow pipeline and served by KServe."""

__version__ = "0.1.0"
