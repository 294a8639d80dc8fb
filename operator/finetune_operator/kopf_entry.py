"""Entry for ``kopf run -m finetune_operator.kopf_entry [--all-namespaces | -n NS]``:
registers the handlers into kopf's default registry with settings from FTO_* variables and
credentials from the in-cluster service account or $KUBECONFIG."""

import kopf

from .config import OperatorConfig
from .handlers import register
from .metrics import OperatorMetrics
from .operator_runtime import OperatorRuntime
from .runner import connection_info, load_api_client

_config = OperatorConfig.from_env()
_api_client = load_api_client(workers=_config.workers)
_metrics = OperatorMetrics()
_metrics.serve(_config.metrics_host, _config.metrics_port)
register(kopf.get_default_registry(), OperatorRuntime.build(_api_client, _config, _metrics))


@kopf.on.login(id="login")
def _login(**_: object) -> kopf.ConnectionInfo:
    return connection_info(_api_client)
