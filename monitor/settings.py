"""The one settings object of vidmon.

Built once in each entry point from ``VIDMON_*`` environment variables (nested fields with
``__``, e.g. ``VIDMON_TRAIN__EPOCHS=3``) and passed down; nothing reads the environment at
import time.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from types import UnionType
from typing import Annotated, Literal, Union, get_args, get_origin

from pydantic import (
    AliasChoices,
    BaseModel,
    Field,
    NonNegativeInt,
    PositiveInt,
    SecretStr,
    field_validator,
)
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def comma_list(cls: type, value: object) -> object:
    """A list setting from the environment: a JSON list or comma-separated values."""
    if isinstance(value, str):
        if value.strip().startswith("["):
            return json.loads(value)
        return [u.strip() for u in value.split(",") if u.strip()]
    return value


class TrainSettings(BaseModel):
    """How ``vidmon train`` builds its data and model."""

    data: str | None = Field(
        default=None, description="dataset of video files (a folder per class, a CSV manifest "
                                  "or a Kinetics-style CSV), on disk or at s3://bucket/prefix; "
                                  "none: a synthetic one is written")
    card: Path | None = Field(
        default=None, description="model card file (YAML/JSON) for the input contract; its "
                                  "labels may be left to the dataset. None: stretch to "
                                  "frames x height x width, uniform sampling, Kinetics mean/std")
    test_fraction: float = Field(default=0.2, gt=0, lt=1,
                                 description="held out per class when the data has no split")
    synthetic_dir: Path = Field(default=Path("synthetic-data"),
                                description="where the synthetic dataset is written")
    clips_per_class: PositiveInt = Field(
        default=200, description="synthetic training videos per class (without --data)")
    test_clips_per_class: PositiveInt = Field(
        default=50, description="synthetic held-out videos per class")
    frames: PositiveInt = Field(
        default=16, description="frames of a clip in vidmon's default card")
    height: PositiveInt = Field(
        default=32, description="clip height in pixels in vidmon's default card")
    width: PositiveInt = Field(
        default=32, description="clip width in pixels in vidmon's default card")
    fps: float = Field(default=8.0, gt=0, description="nominal frame rate of generated clips")
    epochs: PositiveInt = Field(default=8, description="training epochs")
    batch_size: PositiveInt = Field(default=32, description="clips per training step")
    learning_rate: float = Field(default=3e-3, gt=0, description="training learning rate")
    seed: int = Field(default=0, description="seed of the data split and the initialisation")
    preset: Literal["tiny", "r2plus1d_18"] = Field(
        default="tiny", description="size of vidmon's R(2+1)D: tiny, or the 18-layer layout")
    width_multiplier: PositiveInt = Field(
        default=16, description="channels of the tiny preset's first stage"
    )
    shuffle_frames: bool = Field(
        default=False, description="control run: shuffle frame order of every clip"
    )
    register_model: bool = Field(default=True, description="register a model version in MLflow")
    estimator_clips: PositiveInt = Field(
        default=600, description="labeled clips a version's accuracy estimators are fitted on, "
                                 "at most (drawn at random); each costs a forward pass under "
                                 "every one of the 24 corrupted windows")
    video_format: Literal[".mp4", ".webm", ".avi", ".mkv", ".mov"] = Field(
        default=".mp4", description="container of the synthetic dataset's files")


class ServeSettings(BaseModel):
    """How ``vidmon serve`` answers and logs predictions."""

    host: str = Field(
        default="127.0.0.1", description="interface the API binds (0.0.0.0 for every one)")
    port: int = Field(default=8000, ge=0, le=65535, description="port the API listens on")
    model_uri: str | None = Field(
        default=None, description="model to serve; default models:/<model_name>@champion")
    device: str = Field(default="auto", description="auto, cpu, cuda or cuda:N")
    max_batch_size: PositiveInt = Field(default=32, description="clips in one forward pass")
    max_wait_ms: float = Field(
        default=0.0, ge=0,
        description="extra wait to fill a batch; at 0 a batch is what queued during the last "
                    "forward pass (measured best at concurrency 1 and equal at 32 on CPU)")
    max_upload_bytes: PositiveInt = Field(default=50 * 1024 * 1024,
                                          description="one uploaded file")
    max_request_bytes: PositiveInt = Field(
        default=64 * 1024 * 1024, description="a prediction request's whole body, enforced "
                                              "while it is read")
    max_body_bytes: PositiveInt = Field(
        default=1024 * 1024, description="the body of any other request (feedback, admin)")
    max_video_frames: PositiveInt = Field(
        default=2000, description="frames an uploaded video may have")
    max_decoded_pixels: PositiveInt = Field(
        default=600_000_000, description="frames x width x height one upload may decode to "
                                         "(about 0.6 s of decoding on one core)")
    max_frame_pixels: PositiveInt = Field(default=4096 * 4096,
                                          description="width x height of one frame")
    max_decode_seconds: float = Field(default=10.0, gt=0,
                                      description="time one video may take to decode")
    max_clips_per_video: PositiveInt = Field(
        default=8, description="a longer video is classified as at most this many evenly "
                               "spaced clips (under the card's stride sampling)")
    max_files_per_request: PositiveInt = Field(
        default=32, description="files in one /v1/predict/batch request")
    max_sources: PositiveInt = Field(
        default=100, description="source ids (cameras, streams, clients) kept apart; "
                                 "predictions of any further one are logged as 'other'")
    top_k: PositiveInt = Field(
        default=3, description="classes with probabilities in an answer")
    decode_workers: PositiveInt = Field(default=2, description="threads decoding uploads")
    max_queued_clips: PositiveInt = Field(
        default=1024, description="clips waiting for the model; more is refused with 503")
    request_deadline_s: float = Field(
        default=30.0, gt=0, description="a clip group that waited this long for the model "
                                        "is answered 504 instead of run")
    limit_concurrency: PositiveInt = Field(
        default=64, description="requests in progress per process; more get 503 from uvicorn")
    clip_sample_rate: float = Field(
        default=0.1, ge=0, le=1, description="share of preprocessed clips kept for retraining")
    log_predictions: bool = Field(default=True, description="off only to benchmark logging")
    writer_queue_size: PositiveInt = Field(
        default=10_000, description="prediction records waiting for the store before answers wait")
    writer_batch_size: PositiveInt = Field(
        default=512, description="records one group commit may take")
    writer_commit_delay_ms: float = Field(
        default=0.0, ge=0, le=1000,
        description="linger before a commit for more requests to share it; at 0 a commit "
                    "takes what queued during the previous one")
    replay_interval_s: float = Field(
        default=5.0, gt=0, description="how often the spool is replayed while the store is "
                                       "back, and the store retried while it is down")
    spool_path: Path = Field(
        default=Path("vidmon-spool.jsonl"),
        description="records and labels the store could not take; one per replica")
    model_poll_interval_s: float = Field(
        default=30.0, gt=0, description="how often to check whether the champion moved")
    threads: PositiveInt | None = Field(
        default=None,
        description="threads the model computes on; none: the cores other processes leave "
                    "it (a retrain, the report job), re-measured every threads_interval_s "
                    "(Linux; elsewhere every core)")
    threads_interval_s: float = Field(
        default=1.0, gt=0, description="how often the model's share of the cores is measured")


class MediaSettings(BaseModel):
    """Long videos classified in the background, and live streams."""

    video_dir: Path = Field(default=Path("videos"),
                            description="where uploaded long videos wait for their job, and "
                                        "where a replica reads one it takes from video_store")
    video_store: str | None = Field(
        default=None, description="s3://bucket/prefix: uploads wait there instead, so any "
                                  "replica can take the job; none: in video_dir, taken only "
                                  "by replicas that see that folder")
    max_video_bytes: PositiveInt = Field(default=4 * 1024**3,
                                         description="largest long-video upload")
    max_video_seconds: float = Field(default=4 * 3600.0, gt=0,
                                     description="longest video a job classifies")
    max_jobs: NonNegativeInt = Field(
        default=1, description="long videos each replica classifies at once (0: none; it "
                               "still takes jobs in, for other replicas)")
    max_queued_jobs: PositiveInt = Field(
        default=32, description="long-video jobs queued or running, all replicas together; "
                                "beyond it new jobs get 503 and Retry-After")
    job_batch_clips: PositiveInt = Field(
        default=8, description="clips of a long video sent to the model together")
    uniform_clip_s: float = Field(
        default=2.0, gt=0, le=60,
        description="a model whose card samples each upload uniformly (one clip an upload) "
                    "sees long videos and streams as clips of this many seconds")
    allowed_urls: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="URL prefixes vidmon may read videos and streams from (comma "
                    "separated; e.g. https://media.example.com/,rtsp://10.0.0.): none, "
                    "only uploads")
    max_streams: PositiveInt = Field(default=16,
                                     description="live streams registered at once")
    stream_hop: PositiveInt | None = Field(
        default=None, description="model frames between a stream's clips (sliding window); "
                                  "default: half a clip")
    lease_s: float = Field(default=15.0, gt=0,
                           description="a job or stream whose replica has not renewed its "
                                       "hold for this long is taken over by another")
    poll_interval_s: float = Field(default=1.0, gt=0,
                                   description="how often a replica looks for jobs and streams")
    open_timeout_s: float = Field(default=10.0, gt=0,
                                  description="seconds to open a URL or wait for a frame")
    retry_max_s: float = Field(default=30.0, gt=0,
                               description="longest wait between reconnects of a stream "
                                           "(the wait doubles from 1 s)")
    dead_after_s: float = Field(default=60.0, gt=0,
                                description="a stream without frames this long is dead "
                                            "(still retried)")

    _comma_separated = field_validator("allowed_urls", mode="before")(comma_list)


class MonitorSettings(BaseModel):
    """How ``vidmon monitor`` schedules and judges reports."""

    interval_s: PositiveInt = Field(default=300, description="seconds between reports")
    cron: str | None = Field(default=None, description="crontab line; replaces interval_s")
    window_minutes: float | None = Field(
        default=60.0, gt=0, description="a report covers the last N minutes of predictions")
    window_predictions: PositiveInt | None = Field(
        default=None, description="or the last M predictions (both: the smaller window)")
    alpha: float = Field(default=0.05, gt=0, lt=1,
                         description="chance that a clean window is called drift")
    min_rows: PositiveInt = Field(
        default=30, description="predictions a window needs to be tested")
    source_baseline_hours: float = Field(
        default=24.0, gt=0,
        description="each source (camera, stream) is tested against its own predictions "
                    "of this many hours before the window: cameras differ from each other, "
                    "so a change is news against the camera's own past")
    source_baseline_rows: PositiveInt = Field(
        default=500, description="baseline predictions per source a test reads, drawn at "
                                 "random from the baseline hours")
    clips_per_video: PositiveInt = Field(
        default=32, description="clips of one long video its reports test, evenly spaced "
                                "over it, so one long file cannot dominate a window")
    sample_rows: PositiveInt = Field(
        default=50_000,
        description="a window (or reference) larger than this is tested on a uniform sample "
                    "of this many rows drawn by the database; counts, class mix and "
                    "realized accuracy still cover every row")
    verdict_tests: Annotated[tuple[Literal["features", "prior", "embedding", "per_class"], ...],
                             NoDecode] = Field(
        default=("features", "prior", "embedding"), min_length=1,
        description="test families that can make a verdict drift (alpha is split over "
                    "them): quality features and confidence, predicted class mix, embeddings "
                    "within classes, each class's embeddings; the others are shown only")
    min_wasserstein: float = Field(
        default=0.2, ge=0, description="a feature drifts only if it also moved by this many "
                                       "reference standard deviations (normalised Wasserstein)")
    min_psi: float = Field(default=0.1, ge=0,
                           description="the class mix drifts only if its PSI reaches this")
    min_auc: float = Field(default=0.55, ge=0.5, le=1,
                           description="embeddings drift only if the witness AUC reaches this")

    _verdict_tests_list = field_validator("verdict_tests", mode="before")(comma_list)
    lateness_s: float = Field(
        default=15.0, ge=0,
        description="a window is reported this long after it ends, so that records a replica "
                    "spooled during a short store outage (replayed every replay_interval_s, "
                    "5 s by default) are in it")
    lease_ttl_s: float = Field(default=60.0, gt=0,
                               description="a scheduler that stops renewing loses its lease")
    queue_floor: float = Field(
        default=0.3, gt=0, le=1,
        description="share of the labeling queue's sampling spread evenly over predictions, "
                    "so every one can be chosen (the rest goes where errors are likely)")
    queue_prior_strength: float = Field(
        default=10.0, gt=0,
        description="labels' weight against the error model: a class's labeled error rate "
                    "counts as much as the model once this many labels are back")
    queue_max_candidates: PositiveInt = Field(
        default=20_000, description="predictions one labeling-queue call considers at most")


class RetrainSettings(BaseModel):
    """When to retrain, on what, and when a challenger may replace the champion."""

    windows: PositiveInt = Field(
        default=2, description="accuracy must be at risk in this many consecutive reports "
                               "(input drift alone never triggers a retrain)")
    min_labeled: PositiveInt = Field(default=50, description="labeled production clips needed")
    cooldown_minutes: float = Field(
        default=360.0, ge=0, description="minutes after a retrain before the next may start")
    accuracy_drop: float = Field(
        default=0.05, ge=0, le=1,
        description="accuracy is at risk when the upper end of its interval (from labels, "
                    "else the label-free estimate) is below the reference accuracy minus this")
    epochs: PositiveInt = Field(default=3, description="fine-tuning epochs of a retrain")
    learning_rate: float = Field(default=1e-3, gt=0, description="fine-tuning learning rate")
    original_clips_per_class: NonNegativeInt = Field(
        default=50, description="original training clips per class mixed into fine-tuning")
    relabeled_ratio: float = Field(
        default=0.5, gt=0, le=1,
        description="a class is taken as relabeled (concept drift) when the champion now "
                    "gets it right significantly less often than on its reference (one-sided "
                    "test on the counts at relabeled_alpha) and under this share of its "
                    "reference accuracy: its original clips are left out of fine-tuning and "
                    "of the gate's original test")
    relabeled_alpha: float = Field(
        default=0.05, gt=0, lt=1,
        description="level of the relabeling test, split over the classes tested")
    relabeled_min_clips: PositiveInt = Field(
        default=5, description="recent labeled clips a class needs before it can be relabeled")
    max_production_clips: PositiveInt = Field(
        default=2000, description="labeled production clips a retrain reads at most")
    recent_share: float = Field(
        default=0.5, ge=0, lt=1,
        description="recent clips are repeated (up to 4 times) until they make at least this "
                    "share of each fine-tuning epoch: a label budget's hundred-odd clips "
                    "otherwise drown in the original sample")
    threads: PositiveInt | None = Field(
        default=None, description="threads a retrain computes on; none: half the cores, so "
                                  "that serving on the same machine keeps the rest")
    nice: int = Field(default=10, ge=0, le=19,
                      description="how much lower a retrain's scheduling priority is than "
                                  "serving's (Unix nice increment)")
    holdout_fraction: float = Field(default=0.3, gt=0, lt=1,
                                    description="recent labeled videos kept for the gate")
    gate_margin: float = Field(
        default=0.02, ge=-1, le=1,
        description="the challenger must beat the champion on held-out recent videos by "
                    "this much at the low end of the paired difference's 95 % interval "
                    "(bootstrap over videos)")
    gate_tolerance: float = Field(
        default=0.05, ge=0, le=1,
        description="and may lose at most this on the original test set, at the low end "
                    "of the same interval (an original test set is often a few hundred "
                    "clips: on 180, three lost and one gained already put the low end at "
                    "-0.033)")
    max_attempts: PositiveInt = Field(
        default=3, description="tries of a failed retrain before it is abandoned")
    backoff_s: float = Field(default=60.0, gt=0, description="first retry delay; doubles")
    auto_start: bool = Field(
        default=True, description="the monitor starts due retrains itself (one machine); "
                                  "false: it only decides, and `vidmon worker` processes "
                                  "claim and run them (a cluster)")
    lease_s: float = Field(default=60.0, gt=0,
                           description="a worker that has not renewed its hold on a running "
                                       "retrain for this long is taken over by another")

    def labeled_needed(self, min_rows: int) -> int:
        """Labeled clips a retrain waits for: ``min_labeled``, and at least twice the
        monitor's ``min_rows``, since the clips held out of fine-tuning become the
        challenger's reference profile and a smaller one would leave it unmonitored."""
        return max(self.min_labeled, 2 * min_rows)


class RetentionSettings(BaseModel):
    """How long vidmon keeps what it logs, and how much disk its clips may take."""

    prediction_days: float | None = Field(
        default=30.0, gt=0,
        description="production predictions older than this are deleted, once a report "
                    "has covered them; none: kept for ever. Reference rows are never deleted")
    labeled_days: float | None = Field(
        default=90.0, gt=0,
        description="labeled production predictions (labels cost money and are retraining "
                    "data) are kept this long instead; none: for ever")
    clip_days: float | None = Field(
        default=30.0, gt=0, description="a kept clip is released this long after its newest "
                                        "prediction; none: no age limit")
    clip_max_mb: PositiveInt | None = Field(
        default=5000, description="the clip store's size limit: the oldest clips go first; "
                                  "none: no size limit")
    clip_grace_s: float = Field(
        default=3600.0, ge=0,
        description="a clip file no prediction refers to is deleted only once it is this "
                    "old (its record may still be in a writer's queue or spool)")
    report_days: float | None = Field(
        default=90.0, gt=0,
        description="older reports keep their summary but lose their Evidently snapshot and "
                    "page, unless a retrain decision cites them; none: kept whole for ever")
    batch_rows: PositiveInt = Field(
        default=5000, le=100_000,
        description="rows one delete transaction takes: small enough that writers never "
                    "wait long for a lock")
    pause_s: float = Field(default=0.0, ge=0, le=10,
                           description="sleep between delete batches")
    interval_s: PositiveInt = Field(default=3600,
                                    description="how often the monitor collects garbage")


class AlertSettings(BaseModel):
    """Where notifications go and how hard vidmon tries to deliver them."""

    webhook_urls: Annotated[list[str], NoDecode] = Field(
        default_factory=list, max_length=20,
        description="receive a JSON POST (Slack-compatible 'text' plus fields) for each "
                    "event; several allowed (JSON list, or comma-separated)")
    public_url: str | None = Field(
        default=None, description="the API's address as people reach it, for links to "
                                  "report pages; default http://<serve host>:<serve port>")
    timeout_s: float = Field(default=5.0, gt=0, le=60,
                             description="seconds a webhook may take to answer")
    max_attempts: PositiveInt = Field(default=8, le=50,
                                      description="tries per event and receiver")
    backoff_s: float = Field(default=2.0, gt=0, description="first retry delay; doubles")
    poll_interval_s: float = Field(default=1.0, gt=0,
                                   description="how often a sender looks for due events")
    stale_after_s: float | None = Field(
        default=None, gt=0, description="a model with predictions but no report for this long "
                                        "means the monitor stopped; default: twice the "
                                        "report interval plus the lateness")

    _comma_separated = field_validator("webhook_urls", mode="before")(comma_list)

    @field_validator("webhook_urls")
    @classmethod
    def _http_only(cls, urls: list[str]) -> list[str]:
        for url in urls:
            if not url.startswith(("http://", "https://")) or len(url) > 2000:
                raise ValueError(f"a webhook URL is http(s) and at most 2000 characters, "
                                 f"not {url[:100]!r}")
        return urls


_KEY_HASH = re.compile(r"sha256:[0-9a-f]{64}")


class ObjectStoreSettings(BaseModel):
    """The object store behind any ``s3://bucket/prefix`` location (the clip store, the
    Evidently workspace, uploaded videos, datasets): any service speaking the S3 API."""

    endpoint_url: str | None = Field(
        default=None, description="the S3 API's URL (MinIO, Ceph, moto...); none: AWS's own")
    region: str = Field(default="us-east-1", description="the bucket's region")
    access_key_id: str | None = Field(
        default=None, description="none: boto3's own chain (AWS_* variables, a pod's role)")
    secret_access_key: SecretStr | None = Field(default=None,
                                                description="the key's secret")
    addressing_style: Literal["auto", "path", "virtual"] = Field(
        default="auto", description="path: http://host/bucket/key, as most self-hosted "
                                    "servers want; virtual: http://bucket.host/key")
    timeout_s: float = Field(default=5.0, gt=0,
                             description="connect and read timeout of one request")
    attempts: PositiveInt = Field(default=3, description="tries of one request")
    clip_queue: NonNegativeInt = Field(
        default=256, description="clips a replica holds for the clip store while it is away; "
                                 "past it, clips are skipped (counted in /metrics)")
    dataset_cache: Path = Field(
        default=Path("dataset-cache"),
        description="where a dataset given by URL (train --data, register --reference-data) "
                    "is mirrored, a folder per bucket/prefix, to train and retrain from")
    dataset_max_bytes: PositiveInt = Field(
        default=50 * 2**30, description="the largest dataset mirrored from a URL")


class AuthSettings(BaseModel):
    """Keys per role, once the API is reachable from a network. Each is the SHA-256 of a
    key (``vidmon hash-key`` prints it), never the key. With client keys set, predictions
    need a client key (or a higher one); with client or labeler keys set, labels and the
    labeling queue need a labeler key and registering or stopping streams an admin key.
    With none set those routes are open, as on 127.0.0.1 by default. Admin routes always
    need an admin key. A higher role may do what a lower one may."""

    client_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="hashes (sha256:<hex>) of prediction clients' keys")
    labeler_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="hashes of labelers' keys: labels drive retraining "
                                          "and the gate, so only they may post them")
    admin_keys: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="hashes of admins' keys (beside VIDMON_ADMIN_KEY)")

    _comma_separated = field_validator("client_keys", "labeler_keys", "admin_keys",
                                       mode="before")(comma_list)

    @field_validator("client_keys", "labeler_keys", "admin_keys")
    @classmethod
    def _hashes_only(cls, values: list[str]) -> list[str]:
        for value in values:
            if not _KEY_HASH.fullmatch(value):
                raise ValueError("a key is given as its hash, sha256:<64 hex digits> "
                                 "(`vidmon hash-key` prints it), not "
                                 f"{value[:12]!r}...")
        return values

    def guards(self, role: str) -> bool:
        """Whether routes of ``role`` (client, labeler, admin) need a key."""
        if role == "client":
            return bool(self.client_keys)
        return bool(self.client_keys or self.labeler_keys)


class Settings(BaseSettings):
    """Settings shared by every vidmon job."""

    model_config = SettingsConfigDict(
        env_prefix="VIDMON_",
        env_nested_delimiter="__",
        env_file=".env",  # the working directory's; the environment wins over it
        protected_namespaces=(),
        extra="ignore",
        env_parse_none_str="none",  # VIDMON_RETENTION__CLIP_MAX_MB=none: no limit
    )

    model_name: str = Field(
        default="vidmon-video-classifier", description="registered model name in MLflow")
    experiment_name: str = Field(
        default="vidmon", description="MLflow experiment of training and retraining runs")
    mlflow_tracking_uri: str = Field(
        default="sqlite:///mlflow.db",
        validation_alias=AliasChoices("VIDMON_MLFLOW_TRACKING_URI", "MLFLOW_TRACKING_URI"),
        description="MLflow tracking store; the default is a SQLite file in the working dir",
    )
    mlflow_ui_url: str | None = Field(
        default=None,
        description="where people open the MLflow UI, for links from the dashboard; default: "
                    "the tracking server when it is one, else http://127.0.0.1:5000 (mlflow ui)")
    mlflow_artifacts_dir: Path = Field(
        default=Path("mlartifacts"),
        description="artifact folder for a local (file or SQLite) tracking store",
    )
    database_url: str = Field(
        default="sqlite:///vidmon.db",
        description="the store; postgresql+psycopg://user@host/db for PostgreSQL")
    clip_dir: str = Field(
        default="clips", description="content-addressed clip store: a folder or "
                                     "s3://bucket/prefix (see the objects section)")
    evidently_workspace: str | None = Field(
        default="evidently-workspace",
        description="copies of report runs for `evidently ui --workspace <dir>`: a folder or "
                    "s3://bucket/prefix; empty: none")
    admin_key: SecretStr | None = Field(
        default=None, description="bearer key of the admin endpoints; unset or empty: they are off")
    log_level: str = Field(default="INFO", description="DEBUG, INFO, WARNING or ERROR")
    train: TrainSettings = Field(default_factory=TrainSettings)
    serve: ServeSettings = Field(default_factory=ServeSettings)
    monitor: MonitorSettings = Field(default_factory=MonitorSettings)
    media: MediaSettings = Field(default_factory=MediaSettings)
    retrain: RetrainSettings = Field(default_factory=RetrainSettings)
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    objects: ObjectStoreSettings = Field(default_factory=ObjectStoreSettings)

    @field_validator("evidently_workspace", "admin_key", mode="before")
    @classmethod
    def _empty_means_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("clip_dir", "evidently_workspace", mode="before")
    @classmethod
    def _location(cls, value: object) -> object:
        return str(value) if isinstance(value, Path) else value

    def to_env(self) -> dict[str, str]:
        """These settings as ``VIDMON_*`` variables, for a child process (e.g. a retrain
        started by the monitor) to build the same settings; sections travel as JSON."""
        env = {}
        for name, value in self:
            if isinstance(value, BaseModel):
                text = json.dumps(value.model_dump(), default=_plain)  # secrets too
            elif isinstance(value, SecretStr):
                text = value.get_secret_value()
            elif value is None:
                if type(self).model_fields[name].default is None:
                    continue
                text = ""
            else:
                text = str(value)
            env[f"VIDMON_{name.upper()}"] = text
        return env

    @property
    def mlflow_ui(self) -> str:
        """Base URL of the MLflow UI."""
        if self.mlflow_ui_url:
            return self.mlflow_ui_url.rstrip("/")
        if self.mlflow_tracking_uri.startswith(("http://", "https://")):
            return self.mlflow_tracking_uri.rstrip("/")
        return "http://127.0.0.1:5000"

    @property
    def public_url(self) -> str:
        """Base URL of the API as people reach it (links in alerts)."""
        return (self.alerts.public_url or
                f"http://{self.serve.host}:{self.serve.port}").rstrip("/")

    @property
    def stale_after(self) -> float:
        """Seconds without a new report after which the monitor counts as stopped."""
        return self.alerts.stale_after_s or (2 * self.monitor.interval_s +
                                             self.monitor.lateness_s)

    @property
    def model_uri(self) -> str:
        """The model the service loads."""
        return self.serve.model_uri or f"models:/{self.model_name}@champion"


def _plain(value: object) -> object:
    """JSON for what ``json`` does not know: a secret's value (a child process needs it),
    paths and the like as text."""
    return value.get_secret_value() if isinstance(value, SecretStr) else str(value)


def _bounds(metadata: list[object]) -> str:
    signs = {"gt": ">", "ge": ">=", "lt": "<", "le": "<="}
    return "".join(f", {sign} {getattr(m, key)}" for m in metadata for key, sign in signs.items()
                   if getattr(m, key, None) is not None)


def _type_name(annotation: object) -> str:
    """A type as a reader of the environment sees it: ``int, > 0 or none``."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Annotated:
        return _type_name(args[0]) + _bounds(list(args[1:]))
    if origin in (Union, UnionType):
        named = [_type_name(a) for a in args if a is not type(None)]
        return " or ".join(named + (["none"] if type(None) in args else []))
    if origin is Literal:
        return " or ".join(str(a) for a in args)
    if origin in (list, tuple):
        return f"list of {_type_name(args[0])}"
    return getattr(annotation, "__name__", str(annotation))


def _type_text(field: FieldInfo) -> str:
    return _type_name(field.annotation) + _bounds(field.metadata)


def _default_text(field: FieldInfo) -> str:
    value = (field.default_factory() if field.default_factory is not None  # type: ignore[call-arg]
             else field.default)
    if value is None:
        return "none"
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value) or "empty"
    return str(value.value if hasattr(value, "value") else value)


def reference_markdown() -> str:
    """``docs/settings.md``: every setting as its environment variable, with its type,
    default and description, generated from the classes above so it cannot drift from
    them (``python -m monitor.settings > docs/settings.md``; a test compares)."""
    lines = ["# Settings reference", "",
             "Generated from `monitor/settings.py` by `python -m monitor.settings > "
             "docs/settings.md`; a test fails when it is stale.", "",
             "Every setting is an environment variable, or a line of `.env` in the working "
             "directory (the environment wins): nested ones join their section and name "
             "with `__`. `none` unsets an optional one; lists "
             "take JSON or comma-separated values. `vidmon COMMAND --help` shows the flags "
             "that override a few of them.", ""]
    sections: list[tuple[str, str, type[BaseModel]]] = [("general", "VIDMON_", Settings)]
    for name, field in Settings.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            sections.append((name, f"VIDMON_{name.upper()}__", field.annotation))
    for title, prefix, model in sections:
        lines += [f"## {title}", "", (model.__doc__ or "").strip().splitlines()[0], "",
                  "| variable | type | default | meaning |", "|---|---|---|---|"]
        for name, field in model.model_fields.items():
            if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
                continue
            cells = [f"`{prefix}{name.upper()}`", _type_text(field), _default_text(field),
                     " ".join((field.description or "").split())]
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(reference_markdown(), end="")
