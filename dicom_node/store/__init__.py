"""The store stage: received instances made durable and recorded, and storage reconciled at start-up.

One module per job: `headers` (read and check an instance's header), `encoding` (are its bytes encoded as
negotiated and whole), `file_meta` (the Part-10 file around a received data set), `durable` (files that
survive a power cut), `instances` (`InstanceStore.receive`, the receiver's one entry point, with group
commit), `reconcile` (start-up), `status` (C-STORE statuses and the refusal). Other stages import from here.
"""

from dicom_node.store.durable import write_durably
from dicom_node.store.headers import PET_CT_SOP_CLASSES, clean_text
from dicom_node.store.instances import Caller, Delivery, InstanceStore
from dicom_node.store.reconcile import reconcile_storage
from dicom_node.store.status import STATUS_SUCCESS

__all__ = [
    "PET_CT_SOP_CLASSES",
    "STATUS_SUCCESS",
    "Caller",
    "Delivery",
    "InstanceStore",
    "clean_text",
    "reconcile_storage",
    "write_durably",
]
