"""paystream: a streaming card-payment pipeline on Apache Beam (Python)."""

from setuptools import find_packages, setup

BEAM = "apache-beam[gcp]>=2.77.0,<2.78"
BIGQUERY = "google-cloud-bigquery>=3.20,<4"  # the BigQuery sink's streaming inserts; the tests read with it

setup(
    name="paystream",
    version="0.1.0",
    description="Card payments from Kafka: parse, dedup, mask PII, enrich, velocity fraud; "
    "to BigQuery, Redis or a local DuckDB warehouse",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    python_requires=">=3.11,<3.13",
    # The product and its development tooling; bench/ (benchmarks) is not shipped.
    packages=find_packages(
        include=["beam_pipeline*", "kernels*", "transforms*", "schemas*", "simulator*", "paystream_dev*"]
    ),
    package_data={
        "schemas": ["*.json", "*.sql", "bigquery/*.json"],
        # the console's page; static/vendor/ is filled from npm by scripts/console_assets.sh
        "beam_pipeline": ["console/static/*", "console/static/vendor/*"],
    },
    install_requires=[
        BEAM,
        "duckdb>=1.1,<3",
        "pyarrow>=14",
    ],
    extras_require={
        "gcp": [BIGQUERY],
        "redis": ["redis>=5,<9"],
        "kafka": ["confluent-kafka>=2.4,<3"],
        "metrics": ["prometheus-client>=0.20,<1"],
        "bench": ["psutil>=5.9", "matplotlib>=3.8"],
        "console": ["flask>=3,<4", "redis>=5,<9", "confluent-kafka>=2.4,<3", "prometheus-client>=0.20,<1"],
        "test": [
            "pytest>=8,<10",
            "hypothesis>=6.100,<7",
            "jsonschema[format-nongpl]>=4.20,<5",
            "pytest-timeout>=2.3",
            "confluent-kafka>=2.4,<3",
            "prometheus-client>=0.20,<1",
            "pyyaml>=6",
            "kubernetes-validate>=1.30",
            "yamllint>=1.35",
            "python-hcl2>=8.1,<9",
            "redis>=5,<9",
            "psutil>=5.9",  # the harness (paystream_dev.harness) stops process trees and samples their RSS
            "flask>=3,<4",  # the console
            "selenium>=4.20,<5",  # the console's test, in Debian's chromium
            BIGQUERY,
        ],
        "lint": ["ruff>=0.6", "mypy>=1.10"],
    },
    entry_points={
        "console_scripts": ["paystream=beam_pipeline.__main__:main"],
        # the development tooling, found by the pipeline without importing it (beam_pipeline/java_provider.py)
        "paystream.local_java": ["cache = paystream_dev.local_java:provider"],
    },
)
