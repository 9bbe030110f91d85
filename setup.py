"""Packaging for Machinery: the library, the `machinery` command, pinned majors."""

from setuptools import find_namespace_packages, setup

setup(
    name="machinery",
    version="0.1.0",
    description="State-aware workflow orchestrator for HTTP microservices",
    packages=find_namespace_packages(include=["machinery", "machinery.*"]),  # templates/ and static/ too
    include_package_data=True,
    package_data={"machinery": ["templates/*.html", "static/*"]},
    python_requires=">=3.11",
    install_requires=[
        "flask>=3.1,<4",
        "flask-smorest>=0.47,<0.48",
        "marshmallow>=4,<5",
        "pymongo>=4.6,<5",
        "mongomock>=4.3,<5",
        "sortedcontainers>=2.4,<3",
        "requests>=2.31,<3",
        "gunicorn>=22",
        "prometheus_client>=0.20,<1",
        "jmespath>=1.0,<2",
        "cryptography>=42",
        "openapi-spec-validator>=0.7,<1",
        "referencing>=0.30",
        "PyYAML>=6,<7",
        "croniter>=6,<8",
        "tzdata>=2024.1",  # the IANA time zones for schedules where the system has none (slim images)
    ],
    entry_points={"console_scripts": ["machinery = machinery.cli:main"]},
)
