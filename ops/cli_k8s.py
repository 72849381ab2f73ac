"""`herald k8s render`: the catalog's pipeline as Kubernetes manifests, delivery scaled by KEDA."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from herald.infra.settings import Settings

k8s = typer.Typer(help="Run Herald on Kubernetes: manifests rendered from the catalog.",
                  no_args_is_help=True)
err = Console(stderr=True)


@k8s.command("render")
def render(
    ctx: typer.Context,
    image: Annotated[str, typer.Option(
        help="The production image (infra/docker/Dockerfile, target herald), as the cluster pulls it.")],
    namespace: Annotated[str, typer.Option(help="The Kubernetes namespace.")] = "herald",
    secret: Annotated[str, typer.Option(
        help="The Secret the pods read HERALD_DATABASE_URL, HERALD_INGEST_SECRETS and the catalog's "
             "variables from (created by you; never rendered).")] = "herald",
    lag_threshold: Annotated[int, typer.Option(
        min=1, help="Records of lag per delivery replica before KEDA adds another.")] = 1000,
    ingest: Annotated[bool, typer.Option(help="Include the signed HTTP ingest.")] = True,
    otlp_endpoint: Annotated[str | None, typer.Option(
        help="Export the stages' OpenTelemetry spans here (OTLP/HTTP, e.g. "
             "http://otel-collector:4318).")] = None,
    out: Annotated[Path | None, typer.Option(help="Write here instead of standard output.")] = None,
) -> None:
    """Deployments for every stage (one per delivery topic), a KEDA ScaledObject per delivery
    consumer group, the catalog and settings as ConfigMaps, a setup Job and Services for the
    API and ingest. Needs HERALD_KAFKA_BOOTSTRAP and HERALD_SCHEMA_REGISTRY_URL as the pods
    reach them; the catalog's ${VARIABLES} need not be set here."""
    from herald.infra.catalogs import catalog_path
    from herald.ops.k8s_manifests import K8sOptions, ManifestError, as_yaml_documents
    from herald.ops.k8s_render import render_manifests
    from herald.schemas.catalog_file import CatalogError, catalog_variables, load_catalog

    settings: Settings = ctx.obj
    path = catalog_path(settings.catalog)
    options = K8sOptions(image, namespace, secret, lag_threshold, ingest, otlp_endpoint)
    try:
        catalog = load_catalog(path, os.environ, connections=False)
        documents, header = render_manifests(settings, catalog, path, catalog_variables(path), options)
    except CatalogError as exc:
        for problem in exc.problems:
            err.print(str(problem), markup=False, highlight=False, soft_wrap=True)
        raise typer.Exit(2) from None
    except ManifestError as exc:
        err.print(f"[red]error:[/red] {exc}", highlight=False)
        raise typer.Exit(2) from None
    text = as_yaml_documents(documents, header)
    if out is None:
        print(text, end="")
    else:
        out.write_text(text, encoding="utf-8")
    for line in header[1:]:
        err.print(line, markup=False, highlight=False, soft_wrap=True)
