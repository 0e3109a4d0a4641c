"""A real model server (Open Inference Protocol v2 over HTTP, dynamic batching,
Prometheus metrics) and the open-loop Locust load test that checks predictions."""
